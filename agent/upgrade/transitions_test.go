package upgrade

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/internal/upgradephase"
)

// TestStateWritesFollowTransitionTable walks every pair of phases through
// the one writer of the state file: a move in upgradephase.Transitions (or
// one that keeps the phase) is written, every other one is refused with
// ErrIllegalTransition and leaves the file as it was.
func TestStateWritesFollowTransitionTable(t *testing.T) {
	phases := append([]Phase{PhaseNone}, upgradephase.All...)
	for _, from := range phases {
		for _, to := range phases {
			t.Run(string(from)+"→"+string(to), func(t *testing.T) {
				dir := t.TempDir()
				c := core{dataDir: dir, log: testLog(t), now: time.Now}
				planted := State{ID: "u1", Phase: from, ToVersion: "1.1.0", Message: "planted"}
				if from == PhaseNone {
					planted = State{}
				}
				if err := writeState(dir, planted, time.Now()); err != nil {
					t.Fatal(err)
				}
				next := State{ID: "u1", Phase: to, ToVersion: "1.1.0", Message: "written"}
				err := c.put(&next)
				got, rerr := ReadState(dir)
				if rerr != nil {
					t.Fatal(rerr)
				}
				if upgradephase.Allowed(from, to) {
					if err != nil || got.Message != "written" {
						t.Fatalf("put %s over %s = %v (state message %q), want it written", to, from, err, got.Message)
					}
					return
				}
				if !errors.Is(err, ErrIllegalTransition) {
					t.Fatalf("put %s over %s = %v, want ErrIllegalTransition", to, from, err)
				}
				if got.Phase != from || got.Message != planted.Message {
					t.Errorf("after a refused %s → %s the state is %s %q, want it unchanged", from, to, got.Phase, got.Message)
				}
			})
		}
	}
}

// TestStateWriteKeepsOtherUpgrade: a state of one upgrade attempt is
// replaced by another attempt only when the first has ended, and only by the
// start (requested) of the next.
func TestStateWriteKeepsOtherUpgrade(t *testing.T) {
	for _, tc := range []struct {
		cur, next Phase
		ok        bool
	}{
		{PhaseCommitted, PhaseRequested, true},
		{PhaseRolledBack, PhaseRequested, true},
		{PhaseFailed, PhaseRequested, true},
		{PhaseRequested, PhaseRequested, false},
		{PhaseWatching, PhaseWatching, false},
		{PhaseWatching, PhaseCommitted, false},
		{PhaseApplying, PhaseFailed, false},
		{PhaseFailed, PhaseFailed, false},
	} {
		dir := t.TempDir()
		c := core{dataDir: dir, log: testLog(t), now: time.Now}
		if err := writeState(dir, State{ID: "u1", Phase: tc.cur}, time.Now()); err != nil {
			t.Fatal(err)
		}
		err := c.put(&State{ID: "u2", Phase: tc.next})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrIllegalTransition)) {
			t.Errorf("put upgrade u2 %s over upgrade u1 %s = %v, want ok=%v", tc.next, tc.cur, err, tc.ok)
		}
	}
}

// fetchForbidden is a Fetcher for tests in which Apply must not download.
type fetchForbidden struct{ t *testing.T }

func (f fetchForbidden) Ensure(context.Context, string) (cache.Entry, error) {
	f.t.Error("Apply downloaded a release, want no upgrade")
	return cache.Entry{}, errors.New("no download in this test")
}

// TestNoUpgradeDuringProbation: while a new version is on probation
// (watching, not committed), a newer desired version waits: an upgrade
// started then would make the unproven version the "previous" binary and
// leave the probation without a watcher.
func TestNoUpgradeDuringProbation(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Hour))
	u, err := New(Options{DataDir: w.data, Executable: w.target, CurrentVersion: "1.1.0", NoGuard: true,
		Logger: testLog(t), Fetcher: fetchForbidden{t}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := u.ShouldUpgrade("1.2.0"); ok {
		t.Errorf("ShouldUpgrade(1.2.0) while 1.1.0 is on probation = true (%s), want false", why)
	}
	if ok, why := u.ShouldUpgrade(Latest); ok {
		t.Errorf("ShouldUpgrade(latest) while 1.1.0 is on probation = true (%s), want false (no resolve either)", why)
	}
	if err := u.Apply(t.Context(), "1.2.0"); err != nil {
		t.Errorf("Apply(1.2.0) while 1.1.0 is on probation = %v, want nil (nothing to do)", err)
	}
	if s := w.read(t); s.ID != w.state.ID || s.Phase != PhaseWatching || s.ToVersion != "1.1.0" {
		t.Errorf("state after Apply during probation = %s %s → %s, want upgrade %s still watching 1.1.0", s.ID, s.Phase, s.ToVersion, w.state.ID)
	}
	// Once committed, the next version is welcome.
	if err := u.Committed(); err != nil {
		t.Fatal(err)
	}
	if ok, why := u.ShouldUpgrade("1.2.0"); !ok {
		t.Errorf("ShouldUpgrade(1.2.0) after 1.1.0 committed = false (%s), want true", why)
	}
}

// TestPutRefusesUnreadableState: the one writer re-reads the
// state; a file it cannot read is an error, never overwritten.
func TestPutRefusesUnreadableState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(`{"phase":"from the future"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c := core{dataDir: dir, log: testLog(t), now: time.Now}
	if err := c.put(&State{ID: "u1", Phase: PhaseRequested}); err == nil {
		t.Error("put over an unreadable state = nil, want an error")
	}
	if data, _ := os.ReadFile(filepath.Join(dir, StateFile)); string(data) != `{"phase":"from the future"}` {
		t.Errorf("state file after a refused put = %s, want it unchanged", data)
	}
}
