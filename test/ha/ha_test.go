//go:build linux

package ha

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testproc"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// writer keeps writing keys to the storage nodes while masters and etcd
// members die: every write is retried until a node acknowledges it (a node
// restarting for its rollout refuses for a moment); acked keeps what was
// acknowledged, to be read back at the end.
type writer struct {
	mu       sync.Mutex
	acked    map[string]string // endpoint/key -> value
	retries  int
	failures []string
	stop     chan struct{}
	done     chan struct{}
}

func startWriter(endpoints []string) *writer {
	w := &writer{acked: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			ep := endpoints[i%len(endpoints)]
			key, val := fmt.Sprintf("w%05d", i), fmt.Sprintf("v%d-%d", i, time.Now().UnixNano())
			deadline := time.Now().Add(long)
			for {
				err := putKey(ep, key, val)
				if err == nil {
					w.mu.Lock()
					w.acked[ep+"/"+key] = val
					w.mu.Unlock()
					break
				}
				w.mu.Lock()
				w.retries++
				if time.Now().After(deadline) {
					w.failures = append(w.failures, err.Error())
					w.mu.Unlock()
					break
				}
				w.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	return w
}

func (w *writer) finish() (acked map[string]string, retries int, failures []string) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.retries, w.failures
}

// TestHighAvailability is issue 16's "Done means" end to end, in order:
//  1. all up: every master lists the three masters, the same leader and a
//     healthy store; every agent is healthy;
//  2. kill -9 the leading master: another leads within 10 s; the agents
//     it served move to the others and stay healthy (no AgentOffline);
//     writes to the nodes during the kill are all acknowledged and read
//     back afterwards;
//  3. a rollout started before the kill completes after the leader change;
//  4. kill -9 the leading etcd member: spawning a node, heartbeats and
//     reads keep working; the member comes back;
//  5. restart every master (SIGTERM, start): agents, nodes, events,
//     rollouts, join tokens and the CA fingerprint are intact.
func TestHighAvailability(t *testing.T) {
	h := newHA(t, v100)
	start := time.Now()
	m0 := h.masters[0]
	for i := range 3 {
		a := h.newAgent(fmt.Sprintf("agent-h%d", i), 21000+i*100)
		_ = a
	}
	h.waitHealthy(m0, start)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// An exact version: publishing 1.1.0 must not move the nodes by itself.
	if _, err := m0.rpc.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{StorageServerVersion: v100}); err != nil {
		t.Fatalf("SetDesiredVersion: %v", err)
	}
	var endpoints []string
	for i, a := range h.agents {
		a.spawn(h.masters[i], fmt.Sprintf("node-h%d", i))
	}
	for i := range h.agents {
		st := h.waitRunning(h.masters[(i+1)%3], fmt.Sprintf("node-h%d", i))
		endpoints = append(endpoints, st.GetEndpoint())
	}

	ok := t.Run("1-all-up", func(t *testing.T) {
		var leaders []string
		for _, m := range h.masters {
			v, err := h.cluster(m)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, x := range v.Masters {
				ids = append(ids, x.ID)
			}
			sort.Strings(ids)
			if !slices.Equal(ids, []string{"m0", "m1", "m2"}) {
				t.Errorf("%s /api/cluster masters = %v, want m0 m1 m2", m.id, ids)
			}
			if v.Store.Backend != "etcd" || !v.Store.OK || len(v.Store.Members) != 3 {
				t.Errorf("%s /api/cluster store = %+v, want etcd ok with 3 members", m.id, v.Store)
			}
			leaders = append(leaders, v.Leader)
		}
		if leaders[0] == "" || leaders[0] != leaders[1] || leaders[1] != leaders[2] {
			t.Errorf("leaders seen by m0 m1 m2 = %v, want one and the same", leaders)
		}
		for _, m := range h.masters {
			h.waitHealthy(m, time.Time{})
		}
	})
	if !ok {
		t.FailNow()
	}

	// 3 (set up before 2): a rollout to 1.1.0, one agent at a time.
	h.stage(v110)
	h.waitPublished(v110)
	ro := gridv1.NewRolloutServiceClient(m0.conn)
	r, err := ro.StartRollout(ctx, &gridv1.StartRolloutRequest{Artifact: "storage-server", Version: v110, Canary: 1,
		Waves: []uint32{50, 100}, MaxParallel: 1, SoakMs: 2000, HealthyDeadlineMs: 60000, ProgressDeadlineMs: 120000})
	if err != nil {
		t.Fatalf("StartRollout: %v", err)
	}
	rolloutID := r.GetId()
	w := startWriter(endpoints)

	var lead *master
	t.Run("2-kill-leader-master", func(t *testing.T) {
		lead = h.leader(short)
		// The canary has passed: the rollout is under way when its
		// controller's master dies. A canary that fails is an error, but
		// the leader is killed anyway so the later steps still run.
		testproc.WaitFor(t, long, "the rollout's canary passed or failed", func() (bool, string) {
			r, err := gridv1.NewRolloutServiceClient(h.live().conn).GetRollout(ctx, &gridv1.RolloutRequest{Id: rolloutID})
			if err != nil {
				return false, err.Error()
			}
			c := r.GetAgents()[0]
			views := h.views("node-h"+c.GetAgentId()[len(c.GetAgentId())-1:], c.GetAgentId())
			switch c.GetState() {
			case "passed":
				return true, ""
			case "failed", "rolled_back":
				t.Errorf("the canary %s failed on %s although every master sees its node healthy there (leader %s):\n%s\n%s", c.GetAgentId(), v110, lead.id, r, views)
				return true, ""
			}
			return false, r.String() + "\n" + views
		})
		// Make sure at least one agent is connected to the leader, so its
		// death means a failover: an agent picks its master at random, so
		// restart one (its nodes keep running) until it picks the leader.
		var onLead []*agent
		testproc.WaitFor(t, long, "an agent connected to the leader "+lead.id, func() (bool, string) {
			onLead = onLead[:0]
			var where []string
			for _, a := range h.agents {
				m := a.master()
				if m == lead {
					onLead = append(onLead, a)
				}
				where = append(where, fmt.Sprintf("%s->%v", a.id, masterID(m)))
			}
			if len(onLead) > 0 {
				return true, ""
			}
			a := h.agents[0]
			a.kill9()
			a.start()
			time.Sleep(3 * time.Second)
			return false, fmt.Sprint(where)
		})
		evsBefore := len(h.events(lead))
		killed := time.Now()
		lead.proc.Kill()
		t.Logf("killed the leading master %s (%d agents on it)", lead.id, len(onLead))
		next := h.leader(short)
		took := time.Since(killed)
		t.Logf("FIGURE: %s leads %.2f s after the leader %s was killed", next.id, took.Seconds(), lead.id)
		if took > 10*time.Second {
			t.Errorf("a new leader after %s, want within 10 s", took)
		}
		for _, a := range onLead {
			testproc.WaitFor(t, short, a.id+" moves to another master", func() (bool, string) {
				m := a.master()
				return m != nil && m != lead, fmt.Sprint(masterID(m))
			})
		}
		t.Logf("FIGURE: the agents of %s are on other masters %.2f s after the kill", lead.id, time.Since(killed).Seconds())
		h.waitHealthy(next, time.Time{})
		// Stay healthy for a while, as the other master sees them.
		until := time.Now().Add(5 * time.Second)
		for time.Now().Before(until) {
			for _, a := range h.agents {
				ag, err := getAgent(next, a.id)
				if err != nil {
					t.Fatalf("GetAgent(%s) on %s: %v", a.id, next.id, err)
				}
				if ag.GetHealth() != gridv1.AgentHealth_AGENT_HEALTH_HEALTHY {
					t.Errorf("%s is %s after the leader's death", a.id, ag.GetHealth())
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		for _, e := range h.events(next)[min(evsBefore, len(h.events(next))):] {
			if e.Type == "AgentOffline" {
				t.Errorf("event %+v after the leader's death: agents were declared offline", e)
			}
		}
	})
	if lead == nil || lead.up() {
		t.FailNow() // the leader was not killed: nothing after makes sense
	}

	t.Run("3-rollout-completes", func(t *testing.T) {
		m := h.live()
		testproc.WaitFor(t, long, "rollout "+rolloutID+" completed", func() (bool, string) {
			r, err := gridv1.NewRolloutServiceClient(m.conn).GetRollout(ctx, &gridv1.RolloutRequest{Id: rolloutID})
			if err != nil {
				return false, err.Error()
			}
			switch r.GetState() {
			case "paused", "failed", "rolled_back", "aborted":
				t.Fatalf("rollout %s %s (%s): %v", rolloutID, r.GetState(), r.GetReason(), r.GetAgents())
			}
			return r.GetState() == "completed", fmt.Sprintf("%s (%s) %v", r.GetState(), r.GetReason(), r.GetAgents())
		})
		for i := range h.agents {
			h.waitRunning(m, fmt.Sprintf("node-h%d", i), func(s *gridv1.NodeStatus) bool { return s.GetVersion() == v110 })
		}
	})
	acked, retries, failures := w.finish()
	t.Run("2-acknowledged-writes-kept", func(t *testing.T) {
		t.Logf("FIGURE: %d writes acknowledged during the kill and the rollout, %d retried attempts, %d given up", len(acked), retries, len(failures))
		if len(failures) > 0 {
			t.Errorf("%d writes never acknowledged: %v", len(failures), failures[:min(3, len(failures))])
		}
		if len(acked) == 0 {
			t.Fatal("no write acknowledged")
		}
		for k, want := range acked {
			code, got, err := httpGet("http://"+k[:len(k)-len("/w00000")]+"/kv/"+k[len(k)-len("w00000"):], "")
			if err != nil || code != 200 || got != want {
				t.Errorf("GET %s = %d %q %v, want %q", k, code, got, err, want)
			}
		}
	})
	if lead == nil || lead.up() {
		t.FailNow()
	}
	// Back to three masters.
	h.startMaster(lead)
	h.leader(short)

	t.Run("4-kill-etcd-leader", func(t *testing.T) {
		var el *member
		testproc.WaitFor(t, short, "an etcd leader", func() (bool, string) {
			for _, m := range h.etcd {
				if m.isLeader() {
					el = m
					return true, ""
				}
			}
			return false, "none reports etcd_server_is_leader 1"
		})
		killed := time.Now()
		el.proc.Kill()
		t.Logf("killed the etcd leader %s", el.name)
		m := h.masters[1]
		a := h.agents[2]
		a.spawn(m, "node-e1")
		h.waitRunning(h.masters[2], "node-e1")
		for _, m := range h.masters {
			h.waitHealthy(m, time.Time{})
		}
		ctx, cancel := context.WithTimeout(context.Background(), short)
		defer cancel()
		la, err := h.masters[0].rpc.ListAgents(ctx, &gridv1.ListAgentsRequest{})
		if err != nil || len(la.GetAgents()) != 3 {
			t.Fatalf("ListAgents with an etcd member down = %d agents, %v; want 3", len(la.GetAgents()), err)
		}
		t.Logf("FIGURE: spawn + heartbeats + reads working %.2f s after the etcd leader was killed", time.Since(killed).Seconds())
		el.start(t, "existing")
		testproc.WaitFor(t, long, "every master sees three healthy etcd members", func() (bool, string) {
			for _, m := range h.masters {
				v, err := h.cluster(m)
				if err != nil {
					return false, err.Error()
				}
				n := 0
				for _, x := range v.Store.Members {
					if x.OK {
						n++
					}
				}
				if !v.Store.OK || n != 3 {
					return false, fmt.Sprintf("%s: %+v", m.id, v.Store)
				}
			}
			return true, ""
		})
	})

	t.Run("5-restart-all-masters", func(t *testing.T) {
		type state struct {
			agents, nodes, rollouts, tokens []string
			events                          []uint64
			ca                              string
		}
		snapshot := func(m *master) state {
			ctx, cancel := context.WithTimeout(context.Background(), short)
			defer cancel()
			var s state
			la, err := m.rpc.ListAgents(ctx, &gridv1.ListAgentsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range la.GetAgents() {
				s.agents = append(s.agents, a.GetAgentId())
			}
			ln, err := m.rpc.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range ln.GetNodes() {
				s.nodes = append(s.nodes, n.GetNodeId())
			}
			lr, err := gridv1.NewRolloutServiceClient(m.conn).ListRollouts(ctx, &gridv1.ListRolloutsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range lr.GetRollouts() {
				s.rollouts = append(s.rollouts, r.GetId()+"="+r.GetState())
			}
			lt, err := m.rpc.ListJoinTokens(ctx, &gridv1.ListJoinTokensRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range lt.GetTokens() {
				s.tokens = append(s.tokens, tk.GetId())
			}
			for _, e := range h.events(m) {
				s.events = append(s.events, e.Seq)
			}
			s.ca = caFingerprint(t, m)
			for _, l := range [][]string{s.agents, s.nodes, s.rollouts, s.tokens} {
				sort.Strings(l)
			}
			return s
		}
		before := snapshot(h.masters[0])
		for _, m := range h.masters {
			if fp := caFingerprint(t, m); fp != before.ca {
				t.Errorf("%s CA fingerprint %s, m0's %s: not one CA", m.id, fp, before.ca)
			}
		}
		for _, m := range h.masters {
			m.proc.Terminate(t, 30*time.Second)
		}
		for _, m := range h.masters {
			h.startMaster(m)
		}
		h.leader(short)
		for _, m := range h.masters {
			h.waitHealthy(m, time.Time{})
			after := snapshot(m)
			for _, c := range []struct {
				what       string
				was, after []string
			}{{"agents", before.agents, after.agents}, {"nodes", before.nodes, after.nodes},
				{"rollouts", before.rollouts, after.rollouts}, {"join tokens", before.tokens, after.tokens}} {
				if !slices.Equal(c.was, c.after) {
					t.Errorf("%s after the restart: %s = %v, before %v", m.id, c.what, c.after, c.was)
				}
			}
			for _, seq := range before.events {
				if !slices.Contains(after.events, seq) {
					t.Errorf("%s after the restart: event %d lost", m.id, seq)
					break
				}
			}
			if after.ca != before.ca {
				t.Errorf("%s CA fingerprint %s after the restart, %s before", m.id, after.ca, before.ca)
			}
		}
	})
}

func masterID(m *master) string {
	if m == nil {
		return "none"
	}
	return m.id
}
