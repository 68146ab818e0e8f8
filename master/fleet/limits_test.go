package fleet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/store"
)

// openFleet opens a fleet on a fresh bbolt file with opts (Store and Clock
// filled in).
func openFleet(t *testing.T, clock Clock, opts Options) *Fleet {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	opts.Store, opts.Clock = st, clock
	f, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func goodReg(id string) Registration {
	return Registration{AgentID: id, Hostname: "h-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 4}
}

// Issue 9 item 1: a node since or an upgrade time of year 10000 made
// json.Marshal fail inside the fleet, which panicked and took the master
// down. It is refused at the boundary now, by Register and Heartbeat alike.
func TestOutOfRangeTimesAreRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("a1", 4)
	year10000 := time.Unix(253402300800, 0).UTC()
	for _, tm := range []time.Time{year10000, time.Unix(math.MaxInt64, 0), time.Unix(-1, 0), time.Unix(math.MinInt64, 0)} {
		node := []NodeStatus{{NodeID: "n1", State: NodeRunning, PID: 1, Since: tm}}
		up := &UpgradeStatus{Phase: "downloading", FromVersion: "0.1.0", ToVersion: "0.2.0", Updated: tm}

		r := goodReg("a1")
		r.Nodes = node
		if _, err := e.f.Register(ctx, r); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "since") {
			t.Errorf("Register with node since %d = %v, want ErrInvalid naming since", tm.Unix(), err)
		}
		r = goodReg("a1")
		r.Upgrade = up
		if _, err := e.f.Register(ctx, r); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "upgrade updated") {
			t.Errorf("Register with upgrade updated %d = %v, want ErrInvalid", tm.Unix(), err)
		}
		if _, err := e.f.Heartbeat(ctx, Report{AgentID: "a1", Nodes: node}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Heartbeat with node since %d = %v, want ErrInvalid", tm.Unix(), err)
		}
		if _, err := e.f.Heartbeat(ctx, Report{AgentID: "a1", Upgrade: up}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Heartbeat with upgrade updated %d = %v, want ErrInvalid", tm.Unix(), err)
		}
	}
	// The last representable second and a skewed 1970 clock are accepted.
	for _, tm := range []time.Time{limits.MaxTime, time.Unix(1, 0)} {
		e.heartbeat("a1", 1, NodeStatus{NodeID: "n1", State: NodeRunning, PID: 1, Since: tm})
	}
	e.restart()
	if n, err := e.f.Node("n1"); err != nil || !n.Status.Since.Equal(time.Unix(1, 0)) {
		t.Fatalf("Node(n1) after restart = %+v, %v", n, err)
	}
}

// Issue 9 item 1: the encoding panic is gone even where validation cannot
// help (here a clock in year 10001): the call fails, the process lives.
func TestEncodeFailureIsAnErrorNotAPanic(t *testing.T) {
	clock := newFakeClock()
	f := openFleet(t, clock, Options{MasterVersion: "1.0.0"})
	ctx := context.Background()
	if _, err := f.Register(ctx, goodReg("a1")); err != nil {
		t.Fatal(err)
	}
	clock.Set(time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC))
	_, err := f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1"})
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != KindInternal || !strings.Contains(err.Error(), "encode") {
		t.Fatalf("Spawn with the clock in year 10001 = %v, want a KindInternal encode error", err)
	}
}

// Issue 9 item 5: every string and list an agent sends is bounded, numbers
// are in range, and node ids the agent cannot run are refused by the rule
// the agent applies (internal/ident).
func TestRegistrationFieldsAreBounded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	long := func(n int) string { return strings.Repeat("x", n) }
	lines := func(n, l int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = long(l)
		}
		return out
	}
	node := func(mod func(*NodeStatus)) func(*Registration) {
		return func(r *Registration) {
			n := NodeStatus{NodeID: "n1", State: NodeRunning, PID: 10, Endpoint: "10.0.0.1:7100", Version: "1.0.0"}
			mod(&n)
			r.Nodes = []NodeStatus{n}
		}
	}
	upgrade := func(mod func(*UpgradeStatus)) func(*Registration) {
		return func(r *Registration) {
			u := UpgradeStatus{Phase: "downloading", FromVersion: "0.1.0", ToVersion: "0.2.0"}
			mod(&u)
			r.Upgrade = &u
		}
	}
	manyLabels := map[string]string{}
	for i := range limits.MaxLabels + 1 {
		manyLabels[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []struct {
		name string
		mod  func(*Registration)
		want string
	}{
		{"agent id dot", func(r *Registration) { r.AgentID = "." }, "agent id"},
		{"agent id dotdot", func(r *Registration) { r.AgentID = ".." }, "agent id"},
		{"agent id dash", func(r *Registration) { r.AgentID = "-rf" }, "agent id"},
		{"agent id slash", func(r *Registration) { r.AgentID = "a/b" }, "agent id"},
		{"agent id device", func(r *Registration) { r.AgentID = "nul" }, "Windows device"},
		{"hostname long", func(r *Registration) { r.Hostname = long(limits.MaxTextLen + 1) }, "hostname"},
		{"hostname control", func(r *Registration) { r.Hostname = "web\x1b[2J" }, "hostname"},
		{"hostname newline", func(r *Registration) { r.Hostname = "web\nFAKE LOG LINE" }, "hostname"},
		{"agent version not semver", func(r *Registration) { r.AgentVersion = "dev" }, "agent version"},
		{"agent version long", func(r *Registration) { r.AgentVersion = "1.0.0-" + long(3<<20) }, "agent version"},
		{"max storage nodes", func(r *Registration) { r.MaxStorageNodes = limits.MaxStorageNodes + 1 }, "max storage nodes"},
		{"max storage nodes huge", func(r *Registration) { r.MaxStorageNodes = math.MaxUint32 }, "max storage nodes"},
		{"labels count", func(r *Registration) { r.Labels = manyLabels }, "labels"},
		{"label key long", func(r *Registration) { r.Labels = map[string]string{long(limits.MaxLabelKeyLen + 1): "v"} }, "label key"},
		{"label value long", func(r *Registration) { r.Labels = map[string]string{"k": long(limits.MaxLabelValueLen + 1)} }, "label"},
		{"label control", func(r *Registration) { r.Labels = map[string]string{"k": "a\x00b"} }, "label"},
		{"label empty key", func(r *Registration) { r.Labels = map[string]string{"": "v"} }, "empty key"},
		{"node id dot", node(func(n *NodeStatus) { n.NodeID = "." }), "node id"},
		{"node id dotdot", node(func(n *NodeStatus) { n.NodeID = ".." }), "node id"},
		{"node id dash", node(func(n *NodeStatus) { n.NodeID = "-rf" }), "node id"},
		{"node id backslash", node(func(n *NodeStatus) { n.NodeID = `..\x` }), "node id"},
		{"pid min int64", node(func(n *NodeStatus) { n.PID = math.MinInt64 }), "pid"},
		{"pid negative", node(func(n *NodeStatus) { n.PID = -1 }), "pid"},
		{"pid huge", node(func(n *NodeStatus) { n.PID = math.MaxInt64 }), "pid"},
		{"restart count", node(func(n *NodeStatus) { n.RestartCount = math.MaxUint32 }), "restart count"},
		{"endpoint long", node(func(n *NodeStatus) { n.Endpoint = long(limits.MaxTextLen + 1) }), "endpoint"},
		{"node version", node(func(n *NodeStatus) { n.Version = "latest" }), "version"},
		{"node version long", node(func(n *NodeStatus) { n.Version = "1.0.0+" + long(100) }), "version"},
		{"last exit control", node(func(n *NodeStatus) { n.LastExit = "exit\r\x1b" }), "last exit"},
		{"message long", node(func(n *NodeStatus) { n.Message = long(limits.MaxMessageLen + 1) }), "message"},
		{"message not utf8", node(func(n *NodeStatus) { n.Message = "\xff\xfe" }), "UTF-8"},
		{"log lines count", node(func(n *NodeStatus) { n.LastLogLines = lines(limits.MaxLogLines+1, 1) }), "lines"},
		{"log line long", node(func(n *NodeStatus) { n.LastLogLines = lines(1, limits.MaxLogLineLen+1) }), "log line"},
		{"upgrade phase", upgrade(func(u *UpgradeStatus) { u.Phase = "pwned" }), "upgrade phase"},
		{"upgrade phase long", upgrade(func(u *UpgradeStatus) { u.Phase = long(1 << 20) }), "upgrade phase"},
		{"upgrade to version", upgrade(func(u *UpgradeStatus) { u.ToVersion = long(3 << 20) }), "upgrade to version"},
		{"upgrade from version", upgrade(func(u *UpgradeStatus) { u.FromVersion = "v1" }), "upgrade from version"},
		{"upgrade message", upgrade(func(u *UpgradeStatus) { u.Message = long(limits.MaxMessageLen + 1) }), "upgrade message"},
		{"upgrade log", upgrade(func(u *UpgradeStatus) { u.LastLogLines = lines(limits.MaxLogLines+1, 1) }), "upgrade log"},
		{"too many nodes", func(r *Registration) {
			for i := range limits.MaxNodesPerAgent + 1 {
				r.Nodes = append(r.Nodes, NodeStatus{NodeID: fmt.Sprintf("n%d", i), State: NodeRunning})
			}
		}, "node statuses"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := goodReg("a1")
			c.mod(&r)
			_, err := e.f.Register(ctx, r)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Register = %v, want ErrInvalid naming %q", err, c.want)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error message is %d bytes: it must not echo the hostile value", len(err.Error()))
			}
			if r.Nodes != nil || r.Upgrade != nil {
				if _, err := e.f.Heartbeat(ctx, Report{AgentID: "ok", Nodes: r.Nodes, Upgrade: r.Upgrade}); !errors.Is(err, ErrInvalid) {
					t.Fatalf("Heartbeat with the same report = %v, want ErrInvalid", err)
				}
			}
		})
	}
	if agents := e.f.Agents(); len(agents) != 0 {
		t.Fatalf("refused registrations left agents: %+v", agents)
	}
	// The largest legitimate values are accepted.
	r := goodReg("a1")
	r.Hostname, r.MaxStorageNodes, r.Labels = long(limits.MaxTextLen), limits.MaxStorageNodes, map[string]string{long(limits.MaxLabelKeyLen): long(limits.MaxLabelValueLen)}
	r.Nodes = []NodeStatus{{NodeID: strings.Repeat("n", MaxIDLen), State: NodeFailed, PID: limits.MaxPID, RestartCount: limits.MaxRestartCount,
		Message: "line 1\nline 2", LastLogLines: lines(limits.MaxLogLines, limits.MaxLogLineLen), Since: time.Unix(1_700_000_000, 0)}}
	r.Upgrade = &UpgradeStatus{Phase: "rolled_back", FromVersion: "1.0.0", ToVersion: "latest", Updated: time.Unix(1_700_000_000, 0)}
	if _, err := e.f.Register(ctx, r); err != nil {
		t.Fatalf("Register at every limit = %v", err)
	}
	if _, err := e.f.Heartbeat(ctx, Report{AgentID: "a1", AgentVersion: "dev"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Heartbeat with agent version dev = %v, want ErrInvalid", err)
	}
}

// Issue 9 items 5 and 6: a desired version is "latest" or a strict semantic
// version of bounded length; a 3 MB version used to be stored and sent in
// every heartbeat answer, beyond the agent's 4 MB receive limit.
func TestSetDesiredVersionIsBounded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("a1", 1)
	for _, v := range []string{"1." + strings.Repeat("9", 3<<20) + ".0", "1.0.0-" + strings.Repeat("a", limits.MaxVersionLen), "v1.2.3", "1.2", "latest\n"} {
		for _, c := range []VersionChange{{StorageServerVersion: v}, {AgentVersion: v}, {AgentID: "a1", StorageServerVersion: v}} {
			if _, err := e.f.SetDesiredVersion(ctx, c); !errors.Is(err, ErrInvalid) || len(err.Error()) > 1024 {
				t.Fatalf("SetDesiredVersion(%.40q) = %.200v, want a short ErrInvalid", v, err)
			}
		}
	}
	if _, err := e.f.SetDesiredVersion(ctx, VersionChange{StorageServerVersion: "1.2.3-rc.1", AgentVersion: "latest"}); err != nil {
		t.Fatal(err)
	}
}

// Issue 9 item 6: the number of agents is capped; re-registering a known
// agent is always allowed.
func TestAgentCap(t *testing.T) {
	f := openFleet(t, newFakeClock(), Options{MaxAgents: 3})
	ctx := context.Background()
	for i := range 3 {
		if _, err := f.Register(ctx, goodReg(fmt.Sprintf("a%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Register(ctx, goodReg("a3")); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "--max-agents") {
		t.Fatalf("4th agent = %v, want ErrExhausted naming --max-agents", err)
	}
	if _, err := f.Register(ctx, goodReg("a1")); err != nil {
		t.Fatalf("re-registration at the cap = %v", err)
	}
	if n := len(f.Agents()); n != 3 {
		t.Fatalf("%d agents, want 3", n)
	}
	if DefaultMaxAgents < 10000 {
		t.Fatalf("DefaultMaxAgents = %d: the default must be generous", DefaultMaxAgents)
	}
}

// Issue 9 item 6: 150 registrations of 1000 nodes each grew the master to
// 1.26 GB; one agent now holds at most limits.MaxNodesPerAgent node records
// however often it re-registers or reports strays, and the fleet at most
// Options.MaxNodes.
func TestNodeRecordCaps(t *testing.T) {
	f := openFleet(t, newFakeClock(), Options{MaxNodes: 2500})
	ctx := context.Background()
	batch := func(prefix string, n int) []NodeStatus {
		out := make([]NodeStatus, n)
		for i := range out {
			out[i] = NodeStatus{NodeID: fmt.Sprintf("%s-%d", prefix, i), State: NodeRunning, PID: int64(i + 1)}
		}
		return out
	}
	r := goodReg("a1")
	r.Nodes = batch("first", limits.MaxNodesPerAgent)
	if _, err := f.Register(ctx, r); err != nil {
		t.Fatalf("Register with %d nodes = %v", limits.MaxNodesPerAgent, err)
	}
	r.Nodes = batch("second", limits.MaxNodesPerAgent)
	if _, err := f.Register(ctx, r); !errors.Is(err, ErrExhausted) {
		t.Fatalf("re-Register with %d more nodes = %v, want ErrExhausted", limits.MaxNodesPerAgent, err)
	}
	if _, err := f.Heartbeat(ctx, Report{AgentID: "a1", Nodes: batch("stray", 1)}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Heartbeat with a stray beyond the cap = %v, want ErrExhausted", err)
	}
	// Known nodes keep being reported at the cap.
	if _, err := f.Heartbeat(ctx, Report{AgentID: "a1", Nodes: batch("first", limits.MaxNodesPerAgent)}); err != nil {
		t.Fatalf("Heartbeat of the known nodes = %v", err)
	}
	if _, err := f.Spawn(ctx, SpawnRequest{AgentID: "a1"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Spawn on the full agent = %v, want ErrExhausted", err)
	}
	if n, _ := f.Nodes("a1"); len(n) != limits.MaxNodesPerAgent {
		t.Fatalf("a1 holds %d node records, want %d", len(n), limits.MaxNodesPerAgent)
	}
	// The fleet-wide cap (2500 here).
	r2 := goodReg("a2")
	r2.Nodes = batch("a2", limits.MaxNodesPerAgent)
	if _, err := f.Register(ctx, r2); err != nil {
		t.Fatal(err)
	}
	r3 := goodReg("a3")
	r3.Nodes = batch("a3", 501)
	if _, err := f.Register(ctx, r3); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "--max-nodes") {
		t.Fatalf("Register beyond the fleet's node cap = %v, want ErrExhausted naming --max-nodes", err)
	}
	r3.Nodes = batch("a3", 500)
	if _, err := f.Register(ctx, r3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Spawn(ctx, SpawnRequest{AgentID: "a3"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Spawn beyond the fleet's node cap = %v, want ErrExhausted", err)
	}
}

// Issue 9 items 6 and 8: following event watchers are capped (each buffers
// up to 4096 events); a replay without follow is not counted.
func TestWatcherCap(t *testing.T) {
	f := openFleet(t, newFakeClock(), Options{MaxWatchers: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The master's own watcher (the rollout controller) takes no place.
	internalDone := make(chan error, 1)
	go func() {
		internalDone <- f.Watch(ctx, WatchOptions{Follow: true, Internal: true}, func(Event) error { return nil })
	}()
	testutil.WaitFor(t, 30*time.Second, "the internal watcher", func() bool { f.mu.RLock(); defer f.mu.RUnlock(); return len(f.subs) == 1 })
	done := make(chan error, 2)
	for range 2 {
		go func() { done <- f.Watch(ctx, WatchOptions{Follow: true}, func(Event) error { return nil }) }()
	}
	testutil.WaitFor(t, 30*time.Second, "two watchers", func() bool { f.mu.RLock(); defer f.mu.RUnlock(); return len(f.subs) == 3 })
	if err := f.Watch(ctx, WatchOptions{Follow: true}, func(Event) error { return nil }); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third watcher = %v, want ErrExhausted", err)
	}
	if err := f.Watch(ctx, WatchOptions{Tail: 10}, func(Event) error { return nil }); err != nil {
		t.Fatalf("a replay without follow at the cap = %v", err)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-internalDone; err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "watchers gone", func() bool { f.mu.RLock(); defer f.mu.RUnlock(); return len(f.subs) == 0 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := f.Watch(ctx2, WatchOptions{Follow: true}, func(Event) error { return nil }); err != nil {
		t.Fatalf("a watcher after the others left = %v", err)
	}
}

// Agents and nodes recorded by an earlier master under the looser id rule
// (here "_old-" and "node."), which the agent could not run, can still be
// shown, paged past and removed; nothing new may be created with such ids.
func TestRecordsUnderTheOldIDRuleStayManageable(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := agentRec{ID: "_old-", Platform: "linux", Arch: "x86_64", RegisteredAt: time.Unix(1_700_000_000, 0), Generation: 2, StorageServerVersion: "latest"}
	node := Node{ID: "node.", AgentID: "_old-", Desired: true, CreatedAt: time.Unix(1_700_000_000, 0)}
	var tx txn
	tx.putAgent(&rec)
	tx.putNode(&node)
	if tx.err != nil {
		t.Fatal(tx.err)
	}
	if err := st.Apply(context.Background(), tx.ops); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	st, err = store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f, err := New(context.Background(), Options{Store: st, Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"a1", "z1"} {
		if _, err := f.Register(ctx, goodReg(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Agent("_old-"); err != nil {
		t.Fatalf("Agent(_old-) = %v", err)
	}
	if _, err := f.Node("node."); err != nil {
		t.Fatalf("Node(node.) = %v", err)
	}
	var seen []string
	for tok := ""; ; {
		p, err := f.ListAgents(Page{Size: 1, Token: tok})
		if err != nil {
			t.Fatalf("ListAgents after %v = %v", seen, err)
		}
		for _, a := range p.Agents {
			seen = append(seen, a.ID)
		}
		if tok = p.NextToken; tok == "" {
			break
		}
	}
	if strings.Join(seen, ",") != "_old-,a1,z1" {
		t.Fatalf("paged agents = %v", seen)
	}
	if _, err := f.Stop(ctx, "node."); err != nil {
		t.Fatalf("Stop(node.) = %v", err)
	}
	if err := f.Unregister(ctx, "_old-", true); err != nil {
		t.Fatalf("Unregister(_old-) = %v", err)
	}
	if _, err := f.Register(ctx, goodReg("_old-")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Register(_old-) = %v, want ErrInvalid", err)
	}
	if _, err := f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "node."}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Spawn(node.) = %v, want ErrInvalid", err)
	}
}
