package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/store"
)

// newFakeClock is a clock the test moves by hand.
func newFakeClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
}

type env struct {
	t     *testing.T
	dir   string
	st    *store.Bolt
	f     *Fleet
	clock *testutil.Clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: newFakeClock()}
	e.open()
	t.Cleanup(func() { _ = e.st.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	st, err := store.OpenDir(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := New(context.Background(), Options{Store: st, Clock: e.clock, EventLogSize: 50, MasterVersion: "1.0.0"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.st, e.f = st, f
}

// restart closes the store and loads a new fleet from it.
func (e *env) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) register(id string, maxNodes uint32) Desired {
	e.t.Helper()
	d, err := e.f.Register(context.Background(), Registration{AgentID: id, Hostname: "h-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: maxNodes})
	if err != nil {
		e.t.Fatalf("Register(%s) = %v", id, err)
	}
	return d
}

func (e *env) heartbeat(id string, applied uint64, nodes ...NodeStatus) Desired {
	e.t.Helper()
	d, err := e.f.Heartbeat(context.Background(), Report{AgentID: id, AppliedGeneration: applied, Nodes: nodes})
	if err != nil {
		e.t.Fatalf("Heartbeat(%s) = %v", id, err)
	}
	return d
}

func (e *env) sweep() {
	e.t.Helper()
	if err := e.f.Sweep(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) health(id string) Health {
	e.t.Helper()
	a, err := e.f.Agent(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return a.Health
}

func eventTypes(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestLivenessSweep(t *testing.T) {
	e := newEnv(t)
	e.register("a1", 2)
	start := e.f.LastSeq()
	steps := []struct {
		advance time.Duration
		want    Health
	}{
		{5 * time.Second, Healthy},
		{9 * time.Second, Healthy},   // 14 s
		{1 * time.Second, Degraded},  // 15 s
		{14 * time.Second, Degraded}, // 29 s
		{1 * time.Second, Offline},   // 30 s
		{time.Hour, Offline},
	}
	for _, s := range steps {
		e.clock.Advance(s.advance)
		e.sweep()
		if got := e.health("a1"); got != s.want {
			t.Fatalf("after +%s: health = %s, want %s", s.advance, got, s.want)
		}
	}
	e.heartbeat("a1", 1)
	if got := e.health("a1"); got != Healthy {
		t.Fatalf("after heartbeat: health = %s, want healthy", got)
	}
	got := eventTypes(e.f.Events(start, 0))
	want := []string{EventAgentDegraded, EventAgentOffline, EventAgentRecovered}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}

	// A sweep that comes late (the master was paused) still steps through degraded.
	start = e.f.LastSeq()
	e.clock.Advance(time.Minute)
	e.sweep()
	if got := eventTypes(e.f.Events(start, 0)); !slices.Equal(got, []string{EventAgentDegraded, EventAgentOffline}) {
		t.Fatalf("late sweep events = %v, want [AgentDegraded AgentOffline]", got)
	}
}

func TestRunSweepsOnItsOwn(t *testing.T) {
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := newFakeClock()
	f, err := New(context.Background(), Options{Store: st, Clock: clock, SweepInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Register(context.Background(), Registration{AgentID: "a", Platform: "linux", Arch: "aarch64", MaxStorageNodes: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	clock.Advance(31 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, _ := f.Agent("a")
		if a.Health == Offline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not mark the agent offline; health = %s", a.Health)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
}

func TestRegisterKeepsDesiredNodesAndPersists(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	d := e.register("a1", 3)
	if d.Generation != 1 || len(d.Nodes) != 0 || d.StorageServerVersion != "latest" {
		t.Fatalf("first desired = %+v, want generation 1, no nodes, latest", d)
	}
	n, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1", Port: 7100})
	if err != nil {
		t.Fatal(err)
	}
	if n.AgentID != "a1" || !n.Desired {
		t.Fatalf("Spawn = %+v", n)
	}
	d = e.register("a1", 3)
	if d.Generation != 2 || len(d.Nodes) != 1 || d.Nodes[0] != (DesiredNode{NodeID: "n1", Port: 7100}) {
		t.Fatalf("re-register desired = %+v, want generation 2 with n1:7100", d)
	}

	e.restart()
	a, err := e.f.Agent("a1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Health != Offline {
		t.Fatalf("after restart health = %s, want offline until a heartbeat", a.Health)
	}
	if a.Desired.Generation != 2 || len(a.Desired.Nodes) != 1 {
		t.Fatalf("after restart desired = %+v, want generation 2 with n1", a.Desired)
	}
	if a.LastHeartbeat.IsZero() {
		t.Fatal("after restart last heartbeat is zero, want the persisted one")
	}
	d = e.heartbeat("a1", 2)
	if d.Generation != 2 {
		t.Fatalf("heartbeat desired generation = %d, want 2", d.Generation)
	}
	if got := e.health("a1"); got != Healthy {
		t.Fatalf("health after heartbeat = %s", got)
	}
}

func TestHeartbeatUnknownAgent(t *testing.T) {
	e := newEnv(t)
	_, err := e.f.Heartbeat(context.Background(), Report{AgentID: "ghost"})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Heartbeat(ghost) = %v, want ErrNotFound", err)
	}
}

func TestValidation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tooLong := fmt.Sprintf("%0129d", 0)
	cases := []struct {
		name string
		err  error
	}{
		{"empty agent", func() error { _, err := e.f.Register(ctx, Registration{Platform: "linux", Arch: "x86_64"}); return err }()},
		{"long agent", func() error {
			_, err := e.f.Register(ctx, Registration{AgentID: tooLong, Platform: "linux", Arch: "x86_64"})
			return err
		}()},
		{"bad char", func() error {
			_, err := e.f.Register(ctx, Registration{AgentID: "a/b", Platform: "linux", Arch: "x86_64"})
			return err
		}()},
		{"bad platform", func() error {
			_, err := e.f.Register(ctx, Registration{AgentID: "a", Platform: "plan9", Arch: "x86_64"})
			return err
		}()},
		{"bad arch", func() error {
			_, err := e.f.Register(ctx, Registration{AgentID: "a", Platform: "linux", Arch: "amd64"})
			return err
		}()},
		{"bad node state", func() error {
			_, err := e.f.Register(ctx, Registration{AgentID: "a", Platform: "linux", Arch: "x86", Nodes: []NodeStatus{{NodeID: "n", State: "dancing"}}})
			return err
		}()},
		{"bad version", func() error {
			_, err := e.f.SetDesiredVersion(ctx, VersionChange{StorageServerVersion: "v1"})
			return err
		}()},
		{"no version", func() error { _, err := e.f.SetDesiredVersion(ctx, VersionChange{}); return err }()},
		{"bad port", func() error { _, err := e.f.Spawn(ctx, SpawnRequest{Port: 70000}); return err }()},
		{"bad node id", func() error { _, err := e.f.Spawn(ctx, SpawnRequest{NodeID: "x y"}); return err }()},
	}
	for _, c := range cases {
		if !errors.Is(c.err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", c.name, c.err)
		}
	}
}

func TestPlacementAndCapacity(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.f.Spawn(ctx, SpawnRequest{}); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Spawn with no agents = %v, want ErrPrecondition", err)
	}
	e.register("a1", 1)
	e.register("a2", 3)
	e.register("a3", 3)
	var placed []string
	for range 7 {
		n, err := e.f.Spawn(ctx, SpawnRequest{})
		if err != nil {
			t.Fatal(err)
		}
		placed = append(placed, n.AgentID)
	}
	// Most free capacity first, ties broken by the smaller id.
	want := []string{"a2", "a3", "a2", "a3", "a1", "a2", "a3"}
	if !slices.Equal(placed, want) {
		t.Fatalf("placements = %v, want %v", placed, want)
	}
	if _, err := e.f.Spawn(ctx, SpawnRequest{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Spawn on a full grid = %v, want ErrExhausted", err)
	}
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a1"}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Spawn on full a1 = %v, want ErrExhausted", err)
	}
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Spawn on unknown agent = %v, want ErrNotFound", err)
	}
	e.register("a4", 2)
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a4", NodeID: "fixed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a4", NodeID: "fixed"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate node id = %v, want ErrExists", err)
	}
	// Offline agents are neither chosen nor accepted.
	e.clock.Advance(31 * time.Second)
	e.sweep()
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a4"}); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Spawn on offline agent = %v, want ErrPrecondition", err)
	}
	if _, err := e.f.Spawn(ctx, SpawnRequest{}); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("Spawn with every agent offline = %v, want ErrPrecondition", err)
	}
	if c := e.f.Cluster(); c.Status != ClusterCritical || c.OfflineAgents != 4 || c.TotalNodes != 8 {
		t.Fatalf("cluster = %+v, want critical, 4 offline, 8 nodes", c)
	}
}

func TestNodeLifecycleEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("a1", 2)
	n, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	id := n.ID
	start := e.f.LastSeq() - 1 // include NodeSpawnRequested
	running := NodeStatus{NodeID: id, State: NodeRunning, PID: 10, Endpoint: "127.0.0.1:7100", Version: "1.0.0"}
	e.heartbeat("a1", 2, NodeStatus{NodeID: id, State: NodeStarting})
	e.heartbeat("a1", 2, running)
	e.heartbeat("a1", 2, running) // no change, no event
	crashed := NodeStatus{NodeID: id, State: NodeBackoff, RestartCount: 1, LastExit: "exit status 1", Message: "restart in 1s"}
	e.heartbeat("a1", 2, crashed)
	again := running
	again.PID, again.RestartCount, again.LastExit = 11, 1, "exit status 1"
	e.heartbeat("a1", 2, again)
	// Crash and restart between two heartbeats.
	again2 := again
	again2.PID, again2.RestartCount = 12, 2
	e.heartbeat("a1", 2, again2)
	failed := again2
	failed.State, failed.Message = NodeFailed, "gave up after 5 restarts"
	e.heartbeat("a1", 2, failed)

	if c := e.f.Cluster(); c.FailedNodes != 1 || c.TotalNodes != 1 {
		t.Fatalf("cluster = %+v, want 1 failed of 1", c)
	}
	stopped, err := e.f.Stop(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if stopped.Desired || stopped.StopGeneration != 3 {
		t.Fatalf("Stop = %+v, want desired=false stop generation 3", stopped)
	}
	if _, err := e.f.Stop(ctx, id); err != nil {
		t.Fatalf("second Stop = %v, want nil (idempotent)", err)
	}
	d := e.heartbeat("a1", 2, failed)
	if d.Generation != 3 || len(d.Nodes) != 0 {
		t.Fatalf("desired after stop = %+v, want generation 3 without nodes", d)
	}
	// Not applied yet: the record stays.
	if _, err := e.f.Node(id); err != nil {
		t.Fatalf("Node before stop applied = %v", err)
	}
	e.heartbeat("a1", 3, NodeStatus{NodeID: id, State: NodeStopped})
	if _, err := e.f.Node(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Node after stop applied = %v, want ErrNotFound", err)
	}
	got := eventTypes(e.f.Events(start, 0))
	want := []string{
		EventNodeSpawnRequested, EventNodeRunning, EventNodeCrashed, EventNodeBackoff,
		EventNodeRestarted, EventNodeCrashed, EventNodeRestarted, EventNodeCrashed, EventNodeFailed,
		EventNodeStopRequested, EventNodeStopped,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events =\n %v\nwant\n %v", got, want)
	}
	if _, err := e.f.Stop(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stop(dropped) = %v, want ErrNotFound", err)
	}
}

func TestUnknownReportedNodes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Registration adopts nodes the master never heard of.
	d, err := e.f.Register(ctx, Registration{AgentID: "a1", Platform: "darwin", Arch: "aarch64", MaxStorageNodes: 4,
		Nodes: []NodeStatus{{NodeID: "old", State: NodeRunning, PID: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Nodes) != 1 || d.Nodes[0].NodeID != "old" || d.Generation != 2 {
		t.Fatalf("desired after adopting = %+v", d)
	}
	// A heartbeat reporting a stray node records it as not desired...
	d = e.heartbeat("a1", 2, NodeStatus{NodeID: "old", State: NodeRunning, PID: 5}, NodeStatus{NodeID: "stray", State: NodeRunning})
	if len(d.Nodes) != 1 {
		t.Fatalf("stray node became desired: %+v", d)
	}
	n, err := e.f.Node("stray")
	if err != nil || n.Desired {
		t.Fatalf("Node(stray) = %+v, %v; want a record with desired=false", n, err)
	}
	// ...and drops it once the agent no longer reports it.
	e.heartbeat("a1", 2, NodeStatus{NodeID: "old", State: NodeRunning, PID: 5})
	if _, err := e.f.Node("stray"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Node(stray) after it vanished = %v, want ErrNotFound", err)
	}
}

func TestUnregisterAndVersions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("a1", 2)
	e.register("a2", 2)
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	changed, err := e.f.SetDesiredVersion(ctx, VersionChange{StorageServerVersion: "1.2.3"})
	if err != nil || len(changed) != 2 {
		t.Fatalf("SetDesiredVersion(all) = %d agents, %v; want 2", len(changed), err)
	}
	changed, err = e.f.SetDesiredVersion(ctx, VersionChange{AgentID: "a2", AgentVersion: "latest"})
	if err != nil || len(changed) != 1 || changed[0].Desired.AgentVersion != "latest" || changed[0].Desired.Generation != 3 {
		t.Fatalf("SetDesiredVersion(a2) = %+v, %v", changed, err)
	}
	// Unchanged: no generation bump.
	changed, err = e.f.SetDesiredVersion(ctx, VersionChange{AgentID: "a2", AgentVersion: "latest"})
	if err != nil || len(changed) != 0 {
		t.Fatalf("repeat SetDesiredVersion = %+v, %v; want no change", changed, err)
	}
	if _, err := e.f.SetDesiredVersion(ctx, VersionChange{AgentID: "zz", AgentVersion: "latest"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetDesiredVersion(unknown) = %v, want ErrNotFound", err)
	}
	e.register("a3", 1) // gets the fleet-wide default
	if a, _ := e.f.Agent("a3"); a.Desired.StorageServerVersion != "1.2.3" {
		t.Fatalf("new agent storage version = %q, want the default 1.2.3", a.Desired.StorageServerVersion)
	}
	if err := e.f.Unregister(ctx, "a1", true); err != nil {
		t.Fatal(err)
	}
	if err := e.f.Unregister(ctx, "a1", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Unregister = %v, want ErrNotFound", err)
	}
	e.restart()
	if _, err := e.f.Node("n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node of unregistered agent after restart = %v, want ErrNotFound", err)
	}
	if got := len(e.f.Agents()); got != 2 {
		t.Fatalf("agents after restart = %d, want 2", got)
	}
	if a, _ := e.f.Agent("a3"); a.Desired.StorageServerVersion != "1.2.3" {
		t.Fatalf("default version lost on restart: %q", a.Desired.StorageServerVersion)
	}
	if ss, _ := e.f.DefaultVersions(); ss != "1.2.3" {
		t.Fatalf("DefaultVersions after restart = %q", ss)
	}
}

func TestEventLogBoundedAndPersisted(t *testing.T) {
	e := newEnv(t) // EventLogSize 50
	for i := range 60 {
		e.register(fmt.Sprintf("a%02d", i), 1)
	}
	evs := e.f.Events(0, 0)
	if len(evs) != 50 || evs[0].Seq != 11 || evs[49].Seq != 60 {
		t.Fatalf("log = %d events seq %d..%d, want 50 events 11..60", len(evs), evs[0].Seq, evs[len(evs)-1].Seq)
	}
	if got := e.f.Events(55, 3); len(got) != 3 || got[0].Seq != 56 {
		t.Fatalf("Events(55, 3) = %v", got)
	}
	e.restart()
	evs = e.f.Events(0, 0)
	if len(evs) != 50 || evs[0].Seq != 11 || e.f.LastSeq() != 60 {
		t.Fatalf("after restart: %d events from %d, last %d; want 50 from 11, last 60", len(evs), evs[0].Seq, e.f.LastSeq())
	}
	e.register("next", 1)
	if e.f.LastSeq() != 61 {
		t.Fatalf("seq after restart = %d, want 61", e.f.LastSeq())
	}
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	e.register("a1", 1)
	e.register("a2", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Event, 10)
	done := make(chan error, 1)
	go func() {
		done <- e.f.Watch(ctx, WatchOptions{Since: 1, Follow: true}, func(ev Event) error { got <- ev; return nil })
	}()
	first := <-got
	if first.Seq != 2 || first.AgentID != "a2" {
		t.Fatalf("replayed %+v, want seq 2 for a2", first)
	}
	e.register("a3", 1)
	select {
	case ev := <-got:
		if ev.Seq != 3 || ev.AgentID != "a3" {
			t.Fatalf("live event %+v, want seq 3 a3", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no live event")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch after cancel = %v", err)
	}

	// Tail without follow returns.
	var tail []uint64
	if err := e.f.Watch(context.Background(), WatchOptions{Tail: 2}, func(ev Event) error { tail = append(tail, ev.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tail, []uint64{2, 3}) {
		t.Fatalf("tail 2 = %v, want [2 3]", tail)
	}

	// A watcher that does not read is cut off instead of blocking the fleet.
	block := make(chan struct{})
	slow := make(chan error, 1)
	go func() {
		slow <- e.f.Watch(context.Background(), WatchOptions{Follow: true, Buffer: 2}, func(Event) error { <-block; return nil })
	}()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		e.register(fmt.Sprintf("s%d", i), 1)
		select {
		case err := <-slow:
			if !errors.Is(err, ErrWatcherBehind) {
				t.Fatalf("slow watcher = %v, want ErrWatcherBehind", err)
			}
			return
		default:
		}
		if i == 5 {
			close(block)
		}
		if time.Now().After(deadline) {
			t.Fatal("slow watcher never cut off")
		}
	}
}

func TestConcurrentWritesCommitInOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("a", 1000)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a", NodeID: fmt.Sprintf("n-%d-%d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	a, _ := e.f.Agent("a")
	e.restart()
	b, _ := e.f.Agent("a")
	if a.Desired.Generation != b.Desired.Generation || len(b.Desired.Nodes) != 160 {
		t.Fatalf("after restart generation %d with %d nodes; want %d with 160", b.Desired.Generation, len(b.Desired.Nodes), a.Desired.Generation)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{DegradedAfter: 10 * time.Second, OfflineAfter: 5 * time.Second, HeartbeatInterval: time.Millisecond}.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad options")
	}
	for _, want := range []string{"Store is required", "offline-after", "below 1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"", "a", "agent-1", "a/b", "node_1.2", "\x00", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateID("agent", id)
		if err == nil && (id == "" || len(id) > MaxIDLen) {
			t.Fatalf("ValidateID(%q) accepted", id)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateID(%q) = %v, not ErrInvalid", id, err)
		}
	})
}

// A node the agent reports stopped (or stopping) at registration was stopped
// by someone: the master must not adopt it as desired and so revive it.
func TestRegisterDoesNotReviveStoppedNodes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	d, err := e.f.Register(ctx, Registration{
		AgentID: "a", Hostname: "h-a", Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 4,
		Nodes: []NodeStatus{
			{NodeID: "up", State: NodeRunning, PID: 10},
			{NodeID: "gone", State: NodeStopped},
			{NodeID: "going", State: NodeStopping, PID: 11},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var desired []string
	for _, n := range d.Nodes {
		desired = append(desired, n.NodeID)
	}
	if !slices.Equal(desired, []string{"up"}) {
		t.Fatalf("desired after registration = %v, want [up] (stopped and stopping nodes must not be adopted)", desired)
	}
	for _, id := range []string{"gone", "going"} {
		if n, err := e.f.Node(id); err == nil && n.Desired {
			t.Errorf("node %s is desired after its agent reported it %v", id, n.Status.State)
		}
	}
}
