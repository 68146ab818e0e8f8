package upgradephase

import (
	"errors"
	"slices"
	"testing"
)

// every is None, the reported phases and a phase nobody defined.
var every = append([]Phase{None, "bogus"}, All...)

func TestTransitionsTable(t *testing.T) {
	allowed := map[[2]Phase]bool{}
	for from, tos := range Transitions {
		if from != None && !Valid(from) {
			t.Errorf("Transitions has unknown from phase %q", from)
		}
		for _, to := range tos {
			if !Valid(to) {
				t.Errorf("Transitions[%q] has unknown phase %q", from, to)
			}
			if to == from {
				t.Errorf("Transitions[%q] lists itself: a write that keeps the phase is always allowed", from)
			}
			allowed[[2]Phase{from, to}] = true
		}
	}
	for _, from := range every {
		for _, to := range every {
			want := allowed[[2]Phase{from, to}] || (from == to && from != "bogus")
			t.Run(string(from)+"→"+string(to), func(t *testing.T) {
				err := Check(from, to)
				if got := err == nil; got != want {
					t.Fatalf("Check(%q, %q) = %v, want allowed=%v", from, to, err, want)
				}
				if Allowed(from, to) != want {
					t.Errorf("Allowed(%q, %q) = %v, want %v", from, to, !want, want)
				}
				if err != nil && !errors.Is(err, ErrIllegal) {
					t.Errorf("Check(%q, %q) = %v, want it to wrap ErrIllegal", from, to, err)
				}
			})
		}
	}
}

// TestTransitionsReach walks the table: every phase is reachable from
// requested (none only starts an upgrade), every phase can reach a terminal
// phase, and a terminal phase only starts the next upgrade.
func TestTransitionsReach(t *testing.T) {
	reach := func(from Phase) []Phase {
		seen := []Phase{from}
		for i := 0; i < len(seen); i++ {
			for _, to := range Transitions[seen[i]] {
				if !slices.Contains(seen, to) {
					seen = append(seen, to)
				}
			}
		}
		return seen
	}
	fromRequested := reach(Requested)
	for _, p := range All {
		if !slices.Contains(fromRequested, p) {
			t.Errorf("phase %s is not reachable from requested (reached %v)", p, fromRequested)
		}
		if !slices.ContainsFunc(reach(p), Phase.Terminal) {
			t.Errorf("phase %s reaches no terminal phase (reaches %v)", p, reach(p))
		}
		if p.Terminal() && !slices.Equal(Transitions[p], []Phase{Requested}) {
			t.Errorf("Transitions[%s] = %v, want [requested]: a finished upgrade only starts the next", p, Transitions[p])
		}
		if p.Active() == p.Terminal() {
			t.Errorf("phase %s: Active() = Terminal() = %v, want exactly one", p, p.Active())
		}
	}
	if !slices.Equal(Transitions[None], []Phase{Requested}) {
		t.Errorf("Transitions[none] = %v, want [requested]", Transitions[None])
	}
	for from, tos := range Transitions {
		if slices.Contains(tos, None) {
			t.Errorf("Transitions[%q] leads back to none", from)
		}
	}
}

func TestValid(t *testing.T) {
	for _, p := range All {
		if !Valid(p) {
			t.Errorf("Valid(%q) = false", p)
		}
	}
	for _, p := range []Phase{None, "Requested", "rolled-back", "committed ", "bogus"} {
		if Valid(p) {
			t.Errorf("Valid(%q) = true", p)
		}
	}
}
