package rollout

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/fleet"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newRollout(t *testing.T, s *sim, spec Spec) Rollout {
	t.Helper()
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	members, waves, err := Plan("ro-test", spec, s.Agents())
	if err != nil {
		t.Fatal(err)
	}
	return Rollout{ID: "ro-test", Spec: spec, State: Pending, Members: members, Waves: waves, Created: t0}
}

// drive steps r every second of simulated time until it is no longer
// running (or n steps), applying the changes; it checks max-parallel and
// returns the order in which agents started.
func drive(t *testing.T, r Rollout, s *sim, n int) (Rollout, []string) {
	t.Helper()
	now := t0
	var started []string
	for range n {
		next, changes, evs := Step(now, r, NewView(s.Agents()))
		for _, e := range evs {
			if e.Type == EventAgentStarted {
				started = append(started, e.AgentID)
			}
		}
		if got := next.Count(AgentUpgrading) + next.Count(AgentSoaking); !next.RollingBack && got > next.Spec.MaxParallel {
			t.Fatalf("%d agents upgrading, max-parallel %d", got, next.Spec.MaxParallel)
		}
		for _, c := range changes {
			if _, err := s.SetDesiredVersion(t.Context(), fleet.VersionChange{AgentID: c.AgentID, StorageServerVersion: c.Version}); err != nil {
				t.Fatal(err)
			}
		}
		r = next
		if r.State != Running && r.State != Pending {
			break
		}
		now = now.Add(time.Second)
	}
	return r, started
}

func spec(v string) Spec {
	return Spec{Artifact: ArtifactStorageServer, Version: v, Canary: 1, Waves: []int{50, 100}, MaxParallel: 1, Soak: 5 * time.Second}
}

func TestGoodReleaseCompletesCanaryFirstInWaves(t *testing.T) {
	s := newSim(5, "1.0.0")
	r := newRollout(t, s, spec("1.1.0"))
	r, started := drive(t, r, s, 200)
	if r.State != Completed || r.Count(AgentPassed) != 5 {
		t.Fatalf("state %s, passed %d: %+v", r.State, r.Count(AgentPassed), r.Members)
	}
	// canary first, then waves in order, following the hash order
	var want []string
	for w := 0; w <= 2; w++ {
		for _, m := range r.Members {
			if m.Wave == w {
				want = append(want, m.ID)
			}
		}
	}
	if !slices.Equal(started, want) || r.Members[0].Wave != 0 {
		t.Fatalf("start order %v, want %v", started, want)
	}
	// canary 1, then 50% of 4 = 2, then the other 2
	waves := map[int]int{}
	for _, m := range r.Members {
		waves[m.Wave]++
	}
	if waves[0] != 1 || waves[1] != 2 || waves[2] != 2 {
		t.Fatalf("wave sizes %v", waves)
	}
	for _, a := range s.Agents() {
		if a.Nodes[0].Version != "1.1.0" {
			t.Fatalf("%s on %s", a.ID, a.Nodes[0].Version)
		}
	}
}

func TestMaxParallelThree(t *testing.T) {
	s := newSim(20, "1.0.0")
	sp := spec("1.1.0")
	sp.MaxParallel, sp.Canary, sp.Waves = 3, 2, []int{10, 60, 100}
	r, _ := drive(t, newRollout(t, s, sp), s, 500) // drive fails past 3 in flight
	if r.State != Completed {
		t.Fatalf("state %s", r.State)
	}
}

func TestBrokenReleaseHaltsOnCanary(t *testing.T) {
	for _, onFailure := range []string{OnFailurePause, OnFailureRollback} {
		t.Run(onFailure, func(t *testing.T) {
			s := newSim(5, "1.0.0")
			s.bad["2.0.0"] = true
			sp := spec("2.0.0")
			sp.OnFailure = onFailure
			r, started := drive(t, newRollout(t, s, sp), s, 100)
			if len(started) != 1 || started[0] != r.Members[0].ID {
				t.Fatalf("started %v", started)
			}
			canary := r.Members[0]
			if onFailure == OnFailurePause {
				if r.State != Paused || canary.State != AgentFailed || !strings.Contains(canary.Reason, "rolled back") || len(canary.LastLogLines) == 0 {
					t.Fatalf("rollout %s, canary %+v", r.State, canary)
				}
			} else if r.State != RolledBack || canary.State != AgentRolledBack || s.desiredOf(canary.ID) != "1.0.0" {
				t.Fatalf("rollout %s, canary %+v desired %s", r.State, canary, s.desiredOf(canary.ID))
			}
			for _, m := range r.Members[1:] {
				if s.desiredOf(m.ID) != "1.0.0" || (m.State != AgentPending && m.State != AgentSkipped) {
					t.Fatalf("untouched agent %s: %s desired %s", m.ID, m.State, s.desiredOf(m.ID))
				}
			}
			if len(s.sets) != map[string]int{OnFailurePause: 1, OnFailureRollback: 2}[onFailure] {
				t.Fatalf("desired-version changes %v", s.sets)
			}
		})
	}
}

func TestFailureBudget(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxFail    int
		ratio      float64
		wantFailed int
	}{
		{"first failure halts", 0, 0, 1},
		{"N=2 halts on the third", 2, 0, 3},
		{"ratio 0.25 of 8 halts on the third", 0, 0.25, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(8, "1.0.0")
			s.bad["2.0.0"] = true
			sp := spec("2.0.0")
			sp.Canary, sp.MaxFailures, sp.MaxFailureRatio = 0, tc.maxFail, tc.ratio
			r, _ := drive(t, newRollout(t, s, sp), s, 200)
			if r.State != Paused || r.Count(AgentFailed) != tc.wantFailed {
				t.Fatalf("state %s, failed %d, want paused with %d", r.State, r.Count(AgentFailed), tc.wantFailed)
			}
		})
	}
}

func TestHealthyDeadlineAndProgressDeadline(t *testing.T) {
	s := newSim(3, "1.0.0")
	for _, a := range s.agents {
		a.Health = fleet.Degraded // never healthy
	}
	sp := spec("1.1.0")
	sp.Soak, sp.HealthyDeadline, sp.ProgressDeadline, sp.MaxFailures = time.Second, 10*time.Second, time.Hour, 5
	r, _ := drive(t, newRollout(t, s, sp), s, 15)
	if r.Members[0].State != AgentFailed || !strings.Contains(r.Members[0].Reason, "healthy deadline") {
		t.Fatalf("canary %+v", r.Members[0])
	}
	// progress deadline: no agent passes within it
	sp.HealthyDeadline, sp.ProgressDeadline = 20*time.Second, 30*time.Second
	r, _ = drive(t, newRollout(t, s, sp), s, 100)
	if r.State != Paused || !strings.Contains(r.Reason, "progress deadline") {
		t.Fatalf("state %s reason %q", r.State, r.Reason)
	}
}

func TestPinnedAgentsAreSkipped(t *testing.T) {
	s := newSim(4, "1.0.0")
	s.agents["agent-01"].Pins = map[string]string{ArtifactStorageServer: "1.0.0"}
	r, started := drive(t, newRollout(t, s, spec("1.1.0")), s, 200)
	if r.State != Completed || slices.Contains(started, "agent-01") || s.desiredOf("agent-01") != "1.0.0" {
		t.Fatalf("state %s started %v", r.State, started)
	}
	for _, m := range r.Members {
		if m.ID == "agent-01" && (m.State != AgentSkipped || m.Reason != "pinned to 1.0.0") {
			t.Fatalf("pinned member %+v", m)
		}
	}
}

// A revoked or offline agent is skipped at start with its reason: it can
// never pass, and as the canary it would halt a good release.
func TestRevokedAndOfflineAgentsAreSkipped(t *testing.T) {
	s := newSim(4, "1.0.0")
	s.agents["agent-01"].Revoked = true
	s.agents["agent-02"].Health = fleet.Offline
	r, started := drive(t, newRollout(t, s, spec("1.1.0")), s, 200)
	if r.State != Completed || slices.Contains(started, "agent-01") || slices.Contains(started, "agent-02") {
		t.Fatalf("state %s started %v", r.State, started)
	}
	for _, m := range r.Members {
		switch m.ID {
		case "agent-01", "agent-02":
			if m.State != AgentSkipped || m.Reason == "" {
				t.Errorf("member %+v, want skipped with a reason", m)
			}
		default:
			if m.State != AgentPassed {
				t.Errorf("member %+v, want passed", m)
			}
		}
	}
}

func TestOrderIsStableAndSelectorTargets(t *testing.T) {
	s := newSim(10, "1.0.0")
	a, _, _ := Plan("ro-x", spec("1.1.0").WithDefaults(), s.Agents())
	b, _, _ := Plan("ro-x", spec("1.1.0").WithDefaults(), s.Agents())
	c, _, _ := Plan("ro-y", spec("1.1.0").WithDefaults(), s.Agents())
	ids := func(ms []Member) (out []string) {
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	if !slices.Equal(ids(a), ids(b)) || slices.Equal(ids(a), ids(c)) {
		t.Fatalf("order %v / %v / %v", ids(a), ids(b), ids(c))
	}
	sp := spec("1.1.0")
	sp.Selector = map[string]string{"zone": "a"}
	m, _, err := Plan("ro-x", sp.WithDefaults(), s.Agents())
	if err != nil || len(m) != 5 {
		t.Fatalf("selector: %d members, %v", len(m), err)
	}
	sp.Selector, sp.Agents = nil, []string{"agent-03", "nope"}
	if _, _, err := Plan("ro-x", sp.WithDefaults(), s.Agents()); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown agent: %v", err)
	}
}

func TestRollbackFastPathParallel(t *testing.T) {
	s := newSim(6, "1.0.0")
	sp := Spec{Artifact: ArtifactStorageServer, RollbackTo: map[string]string{}, RollbackParallel: 3}
	for _, a := range s.agents {
		a.Desired.StorageServerVersion = "2.0.0"
		sp.RollbackTo[a.ID] = "1.0.0"
	}
	r := newRollout(t, s, sp)
	r.RollingBack = true
	var peak int
	now := t0
	for range 10 {
		next, changes, _ := Step(now, r, NewView(s.Agents()))
		n := 0
		for _, m := range next.Members {
			if m.Reverting {
				n++
			}
		}
		peak = max(peak, n)
		for _, c := range changes {
			s.SetDesiredVersion(t.Context(), fleet.VersionChange{AgentID: c.AgentID, StorageServerVersion: c.Version})
		}
		r, now = next, now.Add(time.Second)
	}
	if r.State != RolledBack || r.Count(AgentRolledBack) != 6 || peak != 3 {
		t.Fatalf("state %s rolled back %d peak %d", r.State, r.Count(AgentRolledBack), peak)
	}
}

func TestValidate(t *testing.T) {
	ok := spec("1.2.3")
	for name, mut := range map[string]func(*Spec){
		"artifact":         func(s *Spec) { s.Artifact = "x" },
		"latest":           func(s *Spec) { s.Version = "latest" },
		"soak >= healthy":  func(s *Spec) { s.Soak = 10 * time.Minute },
		"healthy >= prog":  func(s *Spec) { s.HealthyDeadline = time.Hour },
		"waves not 100":    func(s *Spec) { s.Waves = []int{10, 50} },
		"waves decreasing": func(s *Spec) { s.Waves = []int{50, 10, 100} },
		"max-parallel":     func(s *Spec) { s.MaxParallel = -1 },
		"ratio":            func(s *Spec) { s.MaxFailureRatio = 1.5 },
		"both budgets":     func(s *Spec) { s.MaxFailures, s.MaxFailureRatio = 1, 0.1 },
		"on-failure":       func(s *Spec) { s.OnFailure = "explode" },
		"agents+selector":  func(s *Spec) { s.Agents, s.Selector = []string{"a"}, map[string]string{"k": "v"} },
		"dup agent":        func(s *Spec) { s.Agents = []string{"a", "a"} },
		"control char":     func(s *Spec) { s.Agents = []string{"a\n"} },
		"huge duration":    func(s *Spec) { s.ProgressDeadline = 100 * 24 * time.Hour },
	} {
		s := ok
		mut(&s)
		if err := s.WithDefaults().Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := ok.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

func FuzzSpecValidate(f *testing.F) {
	f.Add("storage-server", "1.2.3", "a,b", "k=v", 1, "50,100", 1, int64(5e9), int64(6e10), int64(6e11), 0, 0.1, "pause")
	f.Add("sutra-agent", "latest", "", "", -1, "100,50", 0, int64(-1), int64(0), int64(1<<62), -5, -0.1, "rollback")
	f.Add("\x00", "1.2.3-\xff", ",,", "=", 1<<30, "0", 1<<30, int64(0), int64(1), int64(2), 1<<30, 2.0, "")
	f.Fuzz(func(t *testing.T, artifact, version, agents, sel string, canary int, waves string, par int, soak, hd, pd int64, maxf int, ratio float64, onf string) {
		s := Spec{Artifact: artifact, Version: version, Canary: canary, MaxParallel: par, Soak: time.Duration(soak),
			HealthyDeadline: time.Duration(hd), ProgressDeadline: time.Duration(pd), MaxFailures: maxf, MaxFailureRatio: ratio, OnFailure: onf}
		if agents != "" {
			s.Agents = strings.Split(agents, ",")
		}
		if sel != "" {
			s.Selector = map[string]string{}
			for _, kv := range strings.Split(sel, ",") {
				k, v, _ := strings.Cut(kv, "=")
				s.Selector[k] = v
			}
		}
		for _, w := range strings.Split(waves, ",") {
			n := 0
			for _, c := range w {
				n = n*10 + int(c-'0')
				if n > 1000 {
					break
				}
			}
			s.Waves = append(s.Waves, n)
		}
		s = s.WithDefaults()
		if err := s.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if !(s.Soak < s.HealthyDeadline && s.HealthyDeadline < s.ProgressDeadline) || s.MaxParallel < 1 || s.Waves[len(s.Waves)-1] != 100 {
			t.Fatalf("accepted a bad spec: %+v", s)
		}
		sm := newSim(7, "1.0.0")
		if _, _, err := Plan("ro-f", s, sm.Agents()); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
	})
}
