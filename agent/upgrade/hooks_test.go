//go:build unix

package upgrade

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// startHooks runs Start for the watched upgrade w as version current and
// reports Restart calls on the returned channel.
func startHooks(t *testing.T, w *watched, current string, lockWait time.Duration) (*Hooks, chan error) {
	t.Helper()
	restarted := make(chan error, 1)
	h, err := Start(t.Context(), StartOptions{
		Options: Options{DataDir: w.data, Executable: w.target, CurrentVersion: current, NoGuard: true,
			LockWait: lockWait, Logger: testLog(t)},
		Restart:        func(err error) { restarted <- err },
		CommitRetryMin: 20 * time.Millisecond, CommitRetryMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return h, restarted
}

// Issue 10 item 1: the agent heartbeats before its deadline while another
// process holds the state lock past the deadline. The heartbeat must not
// block, the commit must be retried until recorded, and Watch must not roll
// the healthy release back.
func TestCommitWhileLockBusyEndsCommitted(t *testing.T) {
	w := newWatched(t, time.Now().Add(2*time.Second))
	// Each attempt to record the commit gives up on the lock after 50 ms
	// (as the 30 s default does, sooner), so it has to be retried.
	h, restarted := startHooks(t, w, "1.1.0", 50*time.Millisecond)
	if s := w.read(t); s.Phase != PhaseWatching || s.Boots != 1 {
		t.Fatalf("after Start: phase %s boots %d, want watching 1", s.Phase, s.Boots)
	}
	holder := startHolder(t, w.data)

	returned := make(chan struct{})
	go func() {
		h.Committed() // the heartbeat goroutine
		h.Committed() // and the next heartbeat
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("Committed (called from the heartbeat) blocked on the state lock held by another process")
	}
	// Hold the lock until well past the deadline: Watch's timer fires.
	deadline := time.Unix(w.read(t).Deadline, 0)
	time.Sleep(time.Until(deadline) + time.Second)
	if s := w.read(t); s.Phase != PhaseWatching {
		t.Fatalf("phase %s while the lock is held, want watching", s.Phase)
	}
	if err := holder.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()

	testutil.WaitFor(t, 30*time.Second, "phase committed", func() bool { return w.read(t).Phase == PhaseCommitted })
	// Give a wrongly running Watch time to act after the commit.
	time.Sleep(500 * time.Millisecond)
	s := w.read(t)
	if s.Phase != PhaseCommitted || slices.Contains(s.FailedVersions, "1.1.0") {
		t.Errorf("state = %s, failed %v; want committed with no failed version", s.Phase, s.FailedVersions)
	}
	w.targetIs(t, w.new, "a healthy release stays")
	select {
	case err := <-restarted:
		t.Errorf("Restart(%v) called for a healthy release", err)
	default:
	}
}

// Committed never waits for the lock, and Status reads the state without it.
func TestHooksHeartbeatNeverWaitsForLock(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Hour))
	h, _ := startHooks(t, w, "1.1.0", time.Hour)
	holder := startHolder(t, w.data)
	done := make(chan struct{})
	go func() {
		h.Committed()
		if st := h.Status(); st == nil || st.Phase != string(PhaseWatching) {
			t.Errorf("Status() = %+v, want phase watching", st)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Committed/Status blocked on the state lock")
	}
	_ = holder.Process.Signal(syscall.SIGKILL)
	_ = holder.Wait()
	testutil.WaitFor(t, 30*time.Second, "phase committed", func() bool { return w.read(t).Phase == PhaseCommitted })
}

// Without a heartbeat, Watch still rolls back at the deadline and the hooks
// ask for a restart with the caller's error.
func TestHooksRollBackWithoutHeartbeat(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Second))
	errAgentRestart := errors.New("agent restart required")
	restarted := make(chan error, 1)
	_, err := Start(t.Context(), StartOptions{
		Options: Options{DataDir: w.data, Executable: w.target, CurrentVersion: "1.1.0", NoGuard: true, Logger: testLog(t)},
		Restart: func(err error) { restarted <- err }, RestartErr: errAgentRestart,
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-restarted:
		if !errors.Is(err, errAgentRestart) || !errors.Is(err, ErrRestartRequired) {
			t.Errorf("Restart(%v), want it to wrap both restart errors", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no restart after the deadline passed without a heartbeat")
	}
	if s := w.read(t); s.Phase != PhaseRolledBack || s.RolledBackBy != "watch" {
		t.Errorf("state = %s by %q, want rolled_back by watch", s.Phase, s.RolledBackBy)
	}
	w.targetIs(t, w.old, "rolled back")
}
