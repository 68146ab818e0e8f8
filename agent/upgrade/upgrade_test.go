package upgrade

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// watched lays out an upgrade 1.0.0 → 1.1.0 in the watching phase, with real
// files: the executable holds the "new" bytes and the previous path the "old".
type watched struct {
	dir, target, data string
	old, new          []byte
	state             State
}

func newWatched(t *testing.T, deadline time.Time) *watched {
	t.Helper()
	dir := t.TempDir()
	w := &watched{dir: dir, target: filepath.Join(dir, "sutra-agent"), data: filepath.Join(dir, "data"),
		old: []byte("old agent binary 1.0.0"), new: []byte("new agent binary 1.1.0")}
	if err := os.WriteFile(w.target, w.new, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(previousPath(w.target), w.old, 0o755); err != nil {
		t.Fatal(err)
	}
	w.state = State{ID: "u1", Phase: PhaseWatching, FromVersion: "1.0.0", ToVersion: "1.1.0", Target: w.target,
		OldPath: previousPath(w.target), OldChecksum: testutil.SHA256(w.old), NewChecksum: testutil.SHA256(w.new),
		Deadline: deadline.Unix(), GuardGraceSeconds: 1, MaxBoots: 3}
	if err := writeState(w.data, w.state, time.Now()); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *watched) upgrader(t *testing.T, current string, now func() time.Time) *Upgrader {
	t.Helper()
	u, err := New(Options{DataDir: w.data, Executable: w.target, CurrentVersion: current, NoGuard: true, Now: now,
		Logger: testLog(t), LogTail: func(n int) []string { return []string{"line 1", "line 2"} }})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (w *watched) read(t *testing.T) State {
	t.Helper()
	s, err := ReadState(w.data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (w *watched) targetIs(t *testing.T, want []byte, what string) {
	t.Helper()
	got, err := os.ReadFile(w.target)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("executable holds %q, want %q (%s)", got, want, what)
	}
}

func TestBeginCountsBootsThenRollsBack(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Hour))
	u := w.upgrader(t, "1.1.0", nil)
	for boot := 1; boot <= 3; boot++ {
		st, err := u.Begin(t.Context())
		if err != nil {
			t.Fatalf("Begin (boot %d) = %v, want nil", boot, err)
		}
		if st.Phase != PhaseWatching || w.read(t).Boots != boot {
			t.Fatalf("after boot %d: phase %s boots %d, want watching %d", boot, st.Phase, w.read(t).Boots, boot)
		}
	}
	w.targetIs(t, w.new, "still on probation")
	st, err := u.Begin(t.Context())
	if !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Begin (boot 4) = %v, want ErrRestartRequired", err)
	}
	s := w.read(t)
	if st.Phase != PhaseRolledBack || s.RolledBackBy != "boot" || !slices.Contains(s.FailedVersions, "1.1.0") {
		t.Errorf("state = %s by %q failed %v, want rolled_back by boot with 1.1.0 failed", s.Phase, s.RolledBackBy, s.FailedVersions)
	}
	if !slices.Equal(s.LastLogLines, []string{"line 1", "line 2"}) {
		t.Errorf("last_log_lines = %q", s.LastLogLines)
	}
	w.targetIs(t, w.old, "rolled back")
	if _, err := os.Stat(sidePath(w.target, ".rejected")); !os.IsNotExist(err) {
		t.Errorf("rejected binary left behind: %v", err)
	}
	if ok, _ := u.ShouldUpgrade("1.1.0"); ok {
		t.Error("ShouldUpgrade(1.1.0) after its rollback = true, want false")
	}
}

func TestBeginPastDeadlineRollsBack(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Minute))
	u := w.upgrader(t, "1.1.0", func() time.Time { return time.Now().Add(2 * time.Minute) })
	if _, err := u.Begin(t.Context()); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Begin past the deadline = %v, want ErrRestartRequired", err)
	}
	w.targetIs(t, w.old, "deadline passed")
}

func TestBeginPreviousVersionRunningAgain(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Hour))
	// An operator copied the old binary back.
	if err := os.WriteFile(w.target, w.old, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := w.upgrader(t, "1.0.0", nil).Begin(t.Context()); err != nil {
		t.Fatalf("Begin = %v", err)
	}
	s := w.read(t)
	if s.Phase != PhaseRolledBack || s.RolledBackBy != "external" || !slices.Contains(s.FailedVersions, "1.1.0") {
		t.Errorf("state = %s by %q failed %v, want rolled_back by external, 1.1.0 failed", s.Phase, s.RolledBackBy, s.FailedVersions)
	}
}

func TestBeginAfterInterruptedUpgrade(t *testing.T) {
	for _, phase := range []Phase{PhaseRequested, PhaseDownloading, PhaseVerifying, PhaseApplying} {
		t.Run(string(phase), func(t *testing.T) {
			w := newWatched(t, time.Time{})
			w.state.Phase, w.state.Deadline = phase, 0
			if err := writeState(w.data, w.state, time.Now()); err != nil {
				t.Fatal(err)
			}
			u := w.upgrader(t, "1.0.0", nil)
			if _, err := u.Begin(t.Context()); err != nil {
				t.Fatalf("Begin = %v", err)
			}
			if s := w.read(t); s.Phase != PhaseFailed || len(s.FailedVersions) != 0 {
				t.Errorf("phase %s failed %v, want failed and nothing blacklisted", s.Phase, s.FailedVersions)
			}
			if ok, why := u.ShouldUpgrade("1.1.0"); !ok {
				t.Errorf("ShouldUpgrade(1.1.0) after an interrupted upgrade = false (%s), want true", why)
			}
		})
	}
}

// The old agent installed the new binary but stopped before recording
// watching: the new binary's Begin starts the probation itself.
func TestBeginAfterCrashDuringApply(t *testing.T) {
	w := newWatched(t, time.Time{})
	w.state.Phase, w.state.Deadline = PhaseApplying, 0
	if err := writeState(w.data, w.state, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.upgrader(t, "1.1.0", nil).Begin(t.Context()); err != nil {
		t.Fatalf("Begin = %v", err)
	}
	s := w.read(t)
	if s.Phase != PhaseWatching || s.Boots != 1 || s.Deadline <= time.Now().Unix() {
		t.Errorf("state = %s boots %d deadline %d, want watching, boot 1, a future deadline", s.Phase, s.Boots, s.Deadline)
	}
}

func TestCommittedAndWatch(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Hour))
	u := w.upgrader(t, "1.1.0", nil)
	if _, err := u.Begin(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- u.Watch(t.Context()) }()
	if err := u.Committed(); err != nil {
		t.Fatalf("Committed = %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch after Committed = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Watch did not return after Committed")
	}
	if s := w.read(t); s.Phase != PhaseCommitted {
		t.Errorf("phase = %s, want committed", s.Phase)
	}
	w.targetIs(t, w.new, "committed")
	if _, err := os.Stat(previousPath(w.target)); err != nil {
		t.Errorf("previous binary not kept for manual rollback: %v", err)
	}
	// A guard for this upgrade has nothing to do.
	if err := Guard(t.Context(), GuardOptions{DataDir: w.data, ID: "u1", Now: func() time.Time { return time.Now().Add(time.Hour) }}); err != nil {
		t.Errorf("Guard after commit = %v", err)
	}
	w.targetIs(t, w.new, "guard after commit")
}

func TestWatchRollsBackAtDeadline(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Second))
	u := w.upgrader(t, "1.1.0", nil)
	if err := u.Watch(t.Context()); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Watch = %v, want ErrRestartRequired", err)
	}
	if s := w.read(t); s.Phase != PhaseRolledBack || s.RolledBackBy != "watch" {
		t.Errorf("state = %s by %q, want rolled_back by watch", s.Phase, s.RolledBackBy)
	}
	w.targetIs(t, w.old, "watch deadline")
	// Too late to commit: the caller must exit so the restored binary runs.
	if err := u.Committed(); !errors.Is(err, ErrRestartRequired) {
		t.Errorf("Committed after rollback = %v, want ErrRestartRequired", err)
	}
}

// The guard, Watch and Begin may all decide to roll back at the same moment:
// exactly one restores, the others see rolled_back.
func TestConcurrentRollbacksRestoreOnce(t *testing.T) {
	w := newWatched(t, time.Now().Add(-time.Minute))
	c := core{dataDir: w.data, log: testLog(t), now: time.Now}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := guardRollback(c, "u1")
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d rollbacks happened, want exactly 1", wins)
	}
	w.targetIs(t, w.old, "concurrent rollback")
	ents, _ := os.ReadDir(w.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".new") || strings.Contains(e.Name(), "rejected") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// The lock file stays (only the OS lock on it comes and goes), unlocked.
	unlock, err := lockState(w.data, 0)
	if err != nil {
		t.Errorf("state lock after the rollbacks: %v, want it free", err)
	} else {
		unlock()
	}
}

func TestRestoreIsIdempotent(t *testing.T) {
	w := newWatched(t, time.Now())
	for i := range 2 {
		if err := restore(w.state, testLog(t)); err != nil {
			t.Fatalf("restore #%d = %v", i+1, err)
		}
		w.targetIs(t, w.old, "restore")
	}
	// A missing executable is written back too.
	if err := os.Remove(w.target); err != nil {
		t.Fatal(err)
	}
	if err := restore(w.state, testLog(t)); err != nil {
		t.Fatalf("restore over a missing executable = %v", err)
	}
	w.targetIs(t, w.old, "restore over missing")
}

func TestRollbackRefusesTamperedPreviousBinary(t *testing.T) {
	w := newWatched(t, time.Now().Add(-time.Minute))
	if err := os.WriteFile(previousPath(w.target), []byte("something else"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := w.upgrader(t, "1.1.0", nil).Begin(t.Context())
	if !errors.Is(err, ErrRollbackFailed) {
		t.Fatalf("Begin = %v, want ErrRollbackFailed", err)
	}
	w.targetIs(t, w.new, "tampered previous binary is not installed")
	if s := w.read(t); s.Phase != PhaseFailed || !strings.Contains(s.Message, "by hand") {
		t.Errorf("state = %s %q, want failed with instructions", s.Phase, s.Message)
	}
}

func TestGuardLeavesOtherUpgradesAlone(t *testing.T) {
	w := newWatched(t, time.Now().Add(-time.Minute))
	if err := Guard(t.Context(), GuardOptions{DataDir: w.data, ID: "another"}); err != nil {
		t.Fatalf("Guard = %v", err)
	}
	w.targetIs(t, w.new, "guard of another upgrade")
	if code := GuardMain(t.Context(), []string{"--data-dir", w.data}, GuardOptions{}, &strings.Builder{}); code != 2 {
		t.Errorf("GuardMain without --id = %d, want 2", code)
	}
}

func TestShouldUpgrade(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_000_000, 0)
	if err := writeState(dir, State{Phase: PhaseFailed, ToVersion: "1.5.0", RetryAfter: now.Unix() + 60,
		FailedVersions: []string{"1.2.0"}}, now); err != nil {
		t.Fatal(err)
	}
	u, err := New(Options{DataDir: dir, Executable: filepath.Join(dir, "agent"), CurrentVersion: "1.1.0", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desired string
		want    bool
	}{
		{"", false}, {"latest", true}, {"1.1.0", false}, {"1.0.9", false}, {"1.2.0", false},
		{"1.3.0", true}, {"1.5.0", false}, {"bogus", false}, {"v1.3.0", false},
	} {
		if got, why := u.ShouldUpgrade(tc.desired); got != tc.want {
			t.Errorf("ShouldUpgrade(%q) = %v (%s), want %v", tc.desired, got, why, tc.want)
		}
	}
	now = now.Add(2 * time.Minute)
	if got, why := u.ShouldUpgrade("1.5.0"); !got {
		t.Errorf("ShouldUpgrade(1.5.0) after RetryAfter = false (%s), want true", why)
	}
	if err := u.ClearFailed("1.2.0"); err != nil {
		t.Fatal(err)
	}
	if got, why := u.ShouldUpgrade("1.2.0"); !got {
		t.Errorf("ShouldUpgrade(1.2.0) after ClearFailed = false (%s), want true", why)
	}
}

func TestVersionMatches(t *testing.T) {
	for _, tc := range []struct {
		out, v string
		want   bool
	}{
		{"1.2.0", "1.2.0", true}, {"v1.2.0\n", "1.2.0", true}, {"sutra-agent 1.2.0 (linux/amd64)", "1.2.0", true},
		{"1.2.0-rc1", "1.2.0", false}, {"11.2.0", "1.2.0", false}, {"", "1.2.0", false}, {"1.2.01", "1.2.0", false},
	} {
		if got := versionMatches(tc.out, tc.v); got != tc.want {
			t.Errorf("versionMatches(%q, %s) = %v, want %v", tc.out, tc.v, got, tc.want)
		}
	}
}

func TestOptionsValidateReportsAll(t *testing.T) {
	_, err := New(Options{CurrentVersion: "x", Window: -1, MaxBoots: -1, Executable: "/a"})
	if err == nil {
		t.Fatal("New with bad options = nil error")
	}
	for _, want := range []string{"DataDir", "CurrentVersion", "Window", "MaxBoots"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"phase":"watching","to_version":"1.2.0","deadline":5,"boots":1}`))
	f.Add([]byte(`{"phase":"bogus"}`))
	f.Add([]byte(`{"phase":"committed","failed_versions":["1.0.0"],"boots":-1}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseState(data)
		if err != nil {
			return
		}
		if !validPhase(s.Phase) || s.Boots < 0 || s.Deadline < 0 {
			t.Fatalf("parseState accepted %+v", s)
		}
	})
}
