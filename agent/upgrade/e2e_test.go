//go:build unix

package upgrade

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// 1.0.0 under a service manager is told to run 1.1.0: it applies it and
// exits, the service manager starts 1.1.0, which registers and commits.
func TestUpgradeAppliedRestartedCommitted(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.1.0")
	m.setDesired("1.1.0")
	f := install(t, "1.0.0")
	svc := startService(t, f.target, f.args(m, "--window", "60s")...)

	testutil.WaitFor(t, 60*time.Second, "phase committed", func() bool { return f.state(t).Phase == PhaseCommitted })
	s := f.state(t)
	if s.FromVersion != "1.0.0" || s.ToVersion != "1.1.0" || s.Boots != 1 {
		t.Errorf("state = from %s to %s boots %d, want 1.0.0 → 1.1.0 boots 1", s.FromVersion, s.ToVersion, s.Boots)
	}
	if got := versionOf(t, f.target); got != "1.1.0" {
		t.Errorf("%s --version = %s, want 1.1.0", f.target, got)
	}
	if got := versionOf(t, s.OldPath); got != "1.0.0" {
		t.Errorf("previous binary %s --version = %s, want 1.0.0", s.OldPath, got)
	}
	if s.OldPath != previousPath(f.target) {
		t.Errorf("old_path = %s, want %s", s.OldPath, previousPath(f.target))
	}
	regs, _, _ := m.snapshot()
	if i := slices.Index(regs, "1.1.0"); i < 1 || regs[0] != "1.0.0" {
		t.Errorf("registrations = %v, want 1.0.0 then 1.1.0", regs)
	}
	// The guard saw the commit and left.
	waitGone(t, s.GuardPID)
	svc.stop()
	if s.GuardPID == 0 {
		t.Error("no guard was started")
	}
	if ok, why := mustNew(t, f, "1.1.0").ShouldUpgrade("1.1.0"); ok {
		t.Errorf("ShouldUpgrade(1.1.0) at 1.1.0 = true (%s), want false", why)
	}
}

// 1.1.0 is told to run 1.2.0, which exits at once every time it starts
// (before it could read any state): the guard, running the kept 1.1.0,
// restores 1.1.0 after the deadline; 1.2.0 is never tried again.
func TestBrokenVersionRolledBackByGuard(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.2.0")
	m.setDesired("1.2.0")
	f := install(t, "1.1.0")
	startService(t, f.target, f.args(m, "--window", "2s", "--guard-grace", "1s")...)

	testutil.WaitFor(t, 60*time.Second, "phase rolled_back", func() bool { return f.state(t).Phase == PhaseRolledBack })
	s := f.state(t)
	if s.RolledBackBy != "guard" {
		t.Errorf("rolled_back_by = %q, want guard", s.RolledBackBy)
	}
	if !slices.Contains(s.FailedVersions, "1.2.0") {
		t.Errorf("failed_versions = %v, want 1.2.0 in it", s.FailedVersions)
	}
	if s.Message == "" {
		t.Error("no message recorded")
	}
	if got := versionOf(t, f.target); got != "1.1.0" {
		t.Errorf("%s --version = %s after rollback, want 1.1.0", f.target, got)
	}
	// 1.1.0 runs again, keeps polling the desired 1.2.0, and does not retry it.
	_, polls0, _ := m.snapshot()
	testutil.WaitFor(t, 60*time.Second, "1.1.0 to register again and poll 5 more times", func() bool {
		regs, polls, _ := m.snapshot()
		n := 0
		for _, r := range regs {
			if r == "1.1.0" {
				n++
			}
		}
		return n >= 2 && polls["1.1.0"] >= polls0["1.1.0"]+5
	})
	_, _, downloads := m.snapshot()
	if downloads["1.2.0"] != 1 {
		t.Errorf("1.2.0 downloaded %d times, want 1 (never retried)", downloads["1.2.0"])
	}
	if s2 := f.state(t); s2.Phase != PhaseRolledBack || s2.ID != s.ID {
		t.Errorf("state after more polls = %s (id %s), want rolled_back of upgrade %s", s2.Phase, s2.ID, s.ID)
	}
	if ok, why := mustNew(t, f, "1.1.0").ShouldUpgrade("1.2.0"); ok {
		t.Errorf("ShouldUpgrade(1.2.0) = true (%s), want false", why)
	}
	waitGone(t, s.GuardPID)
}

// 1.3.0 starts but never reaches the master: its own Watch rolls back at the
// deadline and exits; the service manager starts 1.0.0 again.
func TestNeverCommittedRolledBackByWatch(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.3.0")
	m.setDesired("1.3.0")
	f := install(t, "1.0.0")
	// The guard waits 30 s past the deadline, so Watch acts first.
	svc := startService(t, f.target, f.args(m, "--window", "2s", "--guard-grace", "30s")...)

	testutil.WaitFor(t, 60*time.Second, "phase rolled_back", func() bool { return f.state(t).Phase == PhaseRolledBack })
	s := f.state(t)
	if s.RolledBackBy != "watch" || !slices.Contains(s.FailedVersions, "1.3.0") {
		t.Errorf("rolled_back_by = %q, failed_versions = %v; want watch and 1.3.0", s.RolledBackBy, s.FailedVersions)
	}
	if len(s.LastLogLines) == 0 || s.LastLogLines[0] != "testagent 1.3.0 log line" {
		t.Errorf("last_log_lines = %q, want the new agent's log tail", s.LastLogLines)
	}
	if got := versionOf(t, f.target); got != "1.0.0" {
		t.Errorf("%s --version = %s after rollback, want 1.0.0", f.target, got)
	}
	testutil.WaitFor(t, 60*time.Second, "1.0.0 to register again", func() bool {
		regs, _, _ := m.snapshot()
		return len(regs) >= 2 && regs[len(regs)-1] == "1.0.0"
	})
	svc.mu.Lock()
	exits := slices.Clone(svc.exits)
	svc.mu.Unlock()
	// 1.0.0 exited 3 after applying, 1.3.0 exited 3 after rolling back.
	if len(exits) < 2 || exits[0] != 3 || exits[1] != 3 {
		t.Errorf("exit codes = %v, want [3 3 ...]", exits)
	}
	waitGone(t, s.GuardPID)
}

// A binary published as 1.4.0 whose --version prints 1.0.5 is never installed.
func TestVersionMismatchNeverApplied(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.4.0")
	f := install(t, "1.0.0")
	before := testutil.SHA256(mustRead(t, f.target))
	u := mustNewFetch(t, f, m, "1.0.0")
	err := u.Apply(t.Context(), "1.4.0")
	if err == nil {
		t.Fatal("Apply(1.4.0) = nil, want a verify error")
	}
	s := f.state(t)
	if s.Phase != PhaseFailed || !slices.Contains(s.FailedVersions, "1.4.0") {
		t.Errorf("state = %s, failed %v; want failed with 1.4.0 recorded", s.Phase, s.FailedVersions)
	}
	if got := testutil.SHA256(mustRead(t, f.target)); got != before {
		t.Error("the executable changed although the new binary's --version did not match")
	}
	if _, err := os.Stat(previousPath(f.target)); !os.IsNotExist(err) {
		t.Errorf("stat %s: %v, want not exist", previousPath(f.target), err)
	}
	if ok, _ := u.ShouldUpgrade("1.4.0"); ok {
		t.Error("ShouldUpgrade(1.4.0) = true after a --version mismatch, want false")
	}
	if err := u.Apply(t.Context(), "1.4.0"); err != nil {
		t.Errorf("second Apply(1.4.0) = %v, want nil (skipped)", err)
	}
}
