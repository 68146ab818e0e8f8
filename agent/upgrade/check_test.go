package upgrade

import (
	"crypto/sha256"
	"os"
	"slices"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(w *watched, s *State)
		checks   int // Check runs; the last one is asserted
		restored bool
		phase    Phase
	}{
		{"on probation, under the start limit", nil, 3, false, PhaseWatching},
		{"crash loop: one start too many", nil, 4, true, PhaseRolledBack},
		{"probation expired (a reboot killed the guard)", func(w *watched, s *State) { s.Deadline = time.Now().Add(-time.Second).Unix() }, 1, true, PhaseRolledBack},
		{"executable missing", func(w *watched, s *State) { os.Remove(w.target) }, 1, true, PhaseRolledBack},
		{"applying, new binary in place", func(w *watched, s *State) { s.Phase, s.Deadline = PhaseApplying, 0 }, 4, true, PhaseRolledBack},
		{"applying, old binary still in place", func(w *watched, s *State) {
			s.Phase, s.Deadline = PhaseApplying, 0
			os.WriteFile(w.target, w.old, 0o755)
		}, 5, false, PhaseApplying},
		{"watching, another binary put in place by hand", func(w *watched, s *State) {
			s.Deadline = time.Now().Add(-time.Second).Unix()
			os.WriteFile(w.target, []byte("operator's build"), 0o755)
		}, 5, false, PhaseWatching},
		{"committed", func(w *watched, s *State) { s.Phase = PhaseCommitted }, 5, false, PhaseCommitted},
		{"no upgrade", func(w *watched, s *State) { *s = State{} }, 5, false, PhaseNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatched(t, time.Now().Add(time.Hour))
			if tc.edit != nil {
				s := w.state
				tc.edit(w, &s)
				if err := writeState(w.data, s, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			var restored bool
			for i := range tc.checks {
				var err error
				restored, err = Check(t.Context(), CheckOptions{DataDir: w.data, Logger: testLog(t)})
				if err != nil {
					t.Fatalf("Check #%d: %v", i+1, err)
				}
				if restored && i+1 < tc.checks {
					t.Fatalf("Check #%d restored, want only at #%d", i+1, tc.checks)
				}
			}
			s := w.read(t)
			if restored != tc.restored || s.Phase != tc.phase {
				t.Fatalf("after %d checks: restored %v, phase %s; want %v, %s", tc.checks, restored, s.Phase, tc.restored, tc.phase)
			}
			if tc.restored {
				w.targetIs(t, w.old, "restored by the check")
				if s.RolledBackBy != "check" || !slices.Contains(s.FailedVersions, "1.1.0") {
					t.Errorf("rolled back by %q, failed %v; want check, 1.1.0", s.RolledBackBy, s.FailedVersions)
				}
			}
		})
	}
}

// The check never restores a previous binary that was tampered with.
func TestCheckRefusesTamperedPreviousBinary(t *testing.T) {
	w := newWatched(t, time.Now().Add(-time.Minute))
	if err := os.WriteFile(previousPath(w.target), []byte("evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(t.Context(), CheckOptions{DataDir: w.data}); err == nil {
		t.Error("Check with a tampered previous binary = nil error, want a refusal")
	}
	w.targetIs(t, w.new, "not replaced by an unknown file")
}

// At every step of the swap the executable path names a complete binary,
// old or new, and the previous binary is kept.
func TestInstallNeverLeavesExecutablePathEmpty(t *testing.T) {
	w := newWatched(t, time.Now().Add(time.Hour))
	if err := os.WriteFile(w.target, w.old, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := previousPath(w.target)
	os.Remove(keep)
	var seen []string
	err := installBinary(w.target, w.new, mustSum(w.new), keep, nil, func(step string) {
		seen = append(seen, step)
		b, err := os.ReadFile(w.target)
		if err != nil || (string(b) != string(w.old) && string(b) != string(w.new)) {
			t.Errorf("at step %s the executable path holds %q (%v), want the old or the new binary", step, b, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) == 0 || seen[len(seen)-1] != StepSwapped {
		t.Errorf("steps = %v, want them to end with %s", seen, StepSwapped)
	}
	w.targetIs(t, w.new, "installed")
	if b, err := os.ReadFile(keep); err != nil || string(b) != string(w.old) {
		t.Errorf("previous binary = %q (%v), want the old one", b, err)
	}
	if st, err := os.Stat(w.target); err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Errorf("installed binary mode: %v %v, want executable", st.Mode(), err)
	}
	// A wrong checksum installs nothing.
	if err := installBinary(w.target, []byte("other"), mustSum(w.new), keep, nil, func(string) {}); err == nil {
		t.Error("installBinary with a wrong checksum = nil error")
	}
	w.targetIs(t, w.new, "a bad checksum left it alone")
}

func mustSum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
