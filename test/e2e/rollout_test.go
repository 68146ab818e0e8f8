package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testproc"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// rolloutOf reads rollout id from the master (nil while it does not answer).
func (g *grid) rolloutOf(id string) *gridv1.Rollout {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := gridv1.NewRolloutServiceClient(g.conn).GetRollout(ctx, &gridv1.RolloutRequest{Id: id})
	if err != nil {
		return nil
	}
	return r
}

func (g *grid) startRollout(req *gridv1.StartRolloutRequest) *gridv1.Rollout {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	r, err := gridv1.NewRolloutServiceClient(g.conn).StartRollout(ctx, req)
	if err != nil {
		g.t.Fatalf("StartRollout: %v", err)
	}
	return r
}

// waitRollout waits until the rollout reaches state, calling sample on
// every read (about every 100 ms).
func (g *grid) waitRollout(id, state string, sample func(*gridv1.Rollout)) *gridv1.Rollout {
	g.t.Helper()
	var last *gridv1.Rollout
	testproc.WaitFor(g.t, long, "rollout "+id+" "+state, func() (bool, string) {
		r := g.rolloutOf(id)
		if r == nil {
			time.Sleep(100 * time.Millisecond)
			return false, "master not answering"
		}
		last = r
		if sample != nil {
			sample(r)
		}
		return r.GetState() == state, fmt.Sprintf("%s (%s) %v", r.GetState(), r.GetReason(), r.GetAgents())
	})
	return last
}

// TestRollouts: master + 5 real agents with one node each. A broken
// release (exits at start) fails on the canary and the rollout rolls back
// by itself: the other four agents never change (same node pids) and the
// canary is back on the old version. Then a good release with canary 1,
// waves 50,100, max-parallel 1, soak 2 s completes across a kill -9 of the
// master: never more than one agent in flight, the canary first, every
// node serving the new version with its data.
func TestRollouts(t *testing.T) {
	g := newGrid(t, v100)
	var agents []*agent
	for i := range 5 {
		a := g.newAgent(fmt.Sprintf("agent-r%d", i), "")
		a.waitRegistered()
		agents = append(agents, a)
	}
	g.setDesiredVersion("", v100) // an exact version: publishing 1.1.0 must not move them
	pids := map[string]int64{}
	eps := map[string]string{}
	for i, a := range agents {
		nodeID := fmt.Sprintf("node-r%d", i)
		a.spawn(nodeID)
		st := g.waitRunning(nodeID)
		putKey(t, st.GetEndpoint(), "owner", nodeID)
		pids[a.id], eps[nodeID] = st.GetPid(), st.GetEndpoint()
	}
	g.stage(v110)
	g.stage(v120)
	g.waitPublished(v110)
	g.waitPublished(v120)

	// (2) The broken release halts on the canary and rolls back.
	bad := g.startRollout(&gridv1.StartRolloutRequest{Artifact: "storage-server", Version: v120, Canary: 1, Waves: []uint32{50, 100},
		MaxParallel: 1, SoakMs: 2000, HealthyDeadlineMs: 30000, ProgressDeadlineMs: 60000, OnFailure: "rollback"})
	r := g.waitRollout(bad.GetId(), "rolled_back", nil)
	canary := r.GetAgents()[0]
	if canary.GetWave() != 0 || canary.GetState() != "rolled_back" {
		t.Fatalf("canary %v", canary)
	}
	for _, m := range r.GetAgents()[1:] {
		if m.GetState() != "skipped" {
			t.Errorf("agent %s reached by a halted rollout: %s", m.GetAgentId(), m.GetState())
		}
	}
	for i, a := range agents {
		nodeID := fmt.Sprintf("node-r%d", i)
		st := g.waitRunning(nodeID, func(s *gridv1.NodeStatus) bool { return s.GetVersion() == v100 })
		if a.id != canary.GetAgentId() && st.GetPid() != pids[a.id] {
			t.Errorf("%s: node pid %d -> %d, want untouched", a.id, pids[a.id], st.GetPid())
		}
	}

	// (1) + (3) The good release, across a kill -9 of the master.
	good := g.startRollout(&gridv1.StartRolloutRequest{Artifact: "storage-server", Version: v110, Canary: 1, Waves: []uint32{50, 100},
		MaxParallel: 1, SoakMs: 2000, HealthyDeadlineMs: 30000, ProgressDeadlineMs: 60000})
	maxInFlight, killed := 0, false
	var firstStarted string
	sample := func(r *gridv1.Rollout) {
		n, passed := 0, 0
		for _, m := range r.GetAgents() {
			switch m.GetState() {
			case "upgrading", "soaking":
				n++
				if firstStarted == "" {
					firstStarted = m.GetAgentId()
				}
			case "passed":
				passed++
				if firstStarted == "" {
					firstStarted = m.GetAgentId()
				}
			}
		}
		maxInFlight = max(maxInFlight, n)
		if passed >= 2 && !killed {
			killed = true
			g.killMaster()
			g.startMaster()
		}
	}
	r = g.waitRollout(good.GetId(), "completed", sample)
	if !killed {
		t.Error("the master was not killed mid-rollout")
	}
	if maxInFlight > 1 {
		t.Errorf("%d agents in flight at once, want at most 1", maxInFlight)
	}
	if firstStarted != r.GetAgents()[0].GetAgentId() || r.GetAgents()[0].GetWave() != 0 {
		t.Errorf("first agent started %s, canary %s", firstStarted, r.GetAgents()[0].GetAgentId())
	}
	for i := range agents {
		nodeID := fmt.Sprintf("node-r%d", i)
		st := g.waitRunning(nodeID, func(s *gridv1.NodeStatus) bool { return s.GetVersion() == v110 })
		if v := nodeVersion(t, st.GetEndpoint()); v != v110 {
			t.Errorf("%s serves %s", nodeID, v)
		}
		if got := getKey(t, st.GetEndpoint(), "owner"); got != nodeID {
			t.Errorf("%s lost its data: %q", nodeID, got)
		}
	}
}

// TestRolloutPinnedAndYanked: (4) a pinned agent is skipped; (5) a yanked
// version cannot be rolled out.
func TestRolloutPinnedAndYanked(t *testing.T) {
	g := newGrid(t, v100, v110)
	a := g.newAgent("agent-p0", "")
	a.waitRegistered()
	b := g.newAgent("agent-p1", "")
	b.waitRegistered()
	g.waitPublished(v110)
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	rel := gridv1.NewReleaseServiceClient(g.conn)
	if _, err := rel.PinAgent(ctx, &gridv1.PinAgentRequest{AgentId: "agent-p1", Artifact: "storage-server", Version: v100}); err != nil {
		t.Fatal(err)
	}
	ro := gridv1.NewRolloutServiceClient(g.conn)
	r, err := ro.StartRollout(ctx, &gridv1.StartRolloutRequest{Artifact: "storage-server", Version: v110, SoakMs: 1000, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range r.GetAgents() {
		if m.GetAgentId() == "agent-p1" && (m.GetState() != "skipped" || m.GetReason() != "pinned to "+v100) {
			t.Errorf("pinned agent %v", m)
		}
	}
	if _, err := rel.YankVersion(ctx, &gridv1.YankVersionRequest{Version: v110}); err != nil {
		t.Fatal(err)
	}
	if _, err := ro.StartRollout(ctx, &gridv1.StartRolloutRequest{Artifact: "storage-server", Version: v110, SoakMs: 1000}); err == nil {
		t.Error("a yanked version was rolled out")
	}
}
