package fleet

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/store"
)

// liveSet is the control plane of the test: which masters are alive, and
// who leads. Each master's coordinator reads it.
type liveSet struct {
	mu     sync.Mutex
	alive  map[string]bool
	leader string
	// fence is what the leader's Fence returns.
	fence []store.Cond
}

func (l *liveSet) set(id string, alive bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.alive[id] = alive
}

func (l *liveSet) lead(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leader = id
}

// testCoord is a cluster.Coordinator whose answers the test chooses.
type testCoord struct {
	id   string
	live *liveSet
}

func (c *testCoord) Self() cluster.Member { return cluster.Member{ID: c.id, Leader: c.Leading()} }

func (c *testCoord) Leading() bool {
	c.live.mu.Lock()
	defer c.live.mu.Unlock()
	return c.live.leader == c.id && c.live.alive[c.id]
}

func (c *testCoord) Fence() ([]store.Cond, bool) {
	if !c.Leading() {
		return nil, false
	}
	c.live.mu.Lock()
	defer c.live.mu.Unlock()
	return c.live.fence, true
}

func (c *testCoord) Members(context.Context) ([]cluster.Member, error) {
	c.live.mu.Lock()
	defer c.live.mu.Unlock()
	var out []cluster.Member
	for id, ok := range c.live.alive {
		if ok {
			out = append(out, cluster.Member{ID: id, Leader: id == c.live.leader})
		}
	}
	slices.SortFunc(out, func(x, y cluster.Member) int { return strings.Compare(x.ID, y.ID) })
	return out, nil
}

func (c *testCoord) Alive(id string) bool {
	c.live.mu.Lock()
	defer c.live.mu.Unlock()
	return c.live.alive[id]
}

func (c *testCoord) Close() error { return nil }

// pair is two masters, A and B, on one store; B leads.
type pair struct {
	t  *testing.T
	st store.Store
	// stB is B's store (nil: st); approx: CaughtUp is not exact (etcd),
	// sync polls until the views agree.
	stB    store.Store
	approx bool
	clock  *testutil.Clock
	live   *liveSet
	a, b   *Fleet
	cancel map[*Fleet]context.CancelFunc
	done   map[*Fleet]chan struct{}
}

func newPair(t *testing.T, st store.Store, opts Options) *pair {
	t.Helper()
	p := &pair{t: t, st: st, clock: newFakeClock(), live: &liveSet{alive: map[string]bool{"A": true, "B": true}, leader: "B"},
		cancel: map[*Fleet]context.CancelFunc{}, done: map[*Fleet]chan struct{}{}}
	p.a = p.open("A", opts)
	p.b = p.open("B", opts)
	return p.cleanup()
}

func (p *pair) cleanup() *pair {
	t := p.t
	t.Cleanup(func() {
		for f := range p.cancel {
			p.stopFollow(f)
		}
	})
	return p
}

func (p *pair) open(id string, opts Options) *Fleet {
	p.t.Helper()
	opts.Store, opts.Clock, opts.Coordinator = p.st, p.clock, &testCoord{id: id, live: p.live}
	if id == "B" && p.stB != nil {
		opts.Store = p.stB
	}
	if opts.MasterVersion == "" {
		opts.MasterVersion = "1.0.0"
	}
	f, err := New(context.Background(), opts)
	if err != nil {
		p.t.Fatal(err)
	}
	p.follow(f)
	return f
}

func (p *pair) follow(f *Fleet) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.cancel[f], p.done[f] = cancel, done
	go func() { defer close(done); _ = f.Follow(ctx) }()
}

func (p *pair) stopFollow(f *Fleet) {
	if c := p.cancel[f]; c != nil {
		c()
		<-p.done[f]
		delete(p.cancel, f)
	}
}

// sync waits until both masters followed the store to its last revision.
func (p *pair) sync() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, err := p.st.Revision(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	for f := range p.cancel {
		if err := f.CaughtUp(ctx, rev); err != nil {
			p.t.Fatalf("CaughtUp(%d): %v", rev, err)
		}
	}
	for p.approx && ctx.Err() == nil {
		aa, an, ae, _, _ := view(p.t, p.a)
		ba, bn, be, _, _ := view(p.t, p.b)
		if reflect.DeepEqual(aa, ba) && reflect.DeepEqual(an, bn) && reflect.DeepEqual(ae, be) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func reg(id string) Registration {
	return Registration{AgentID: id, Hostname: "h-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 500}
}

// view is what an operator sees of a fleet, to compare two masters.
func view(t *testing.T, f *Fleet) (agents []Agent, nodes []Node, events []Event, ss, av string) {
	t.Helper()
	nodes, err := f.Nodes("")
	if err != nil {
		t.Fatal(err)
	}
	ss, av = f.DefaultVersions()
	return f.Agents(), nodes, f.Events(0, 0), ss, av
}

func sameView(t *testing.T, p *pair) {
	t.Helper()
	aa, an, ae, ass, aav := view(t, p.a)
	ba, bn, be, bss, bav := view(t, p.b)
	if !reflect.DeepEqual(aa, ba) {
		t.Errorf("agents differ:\nA: %+v\nB: %+v", aa, ba)
	}
	if !reflect.DeepEqual(an, bn) {
		t.Errorf("nodes differ:\nA: %+v\nB: %+v", an, bn)
	}
	if !reflect.DeepEqual(ae, be) {
		t.Errorf("events differ:\nA: %+v\nB: %+v", ae, be)
	}
	if ass != bss || aav != bav {
		t.Errorf("default versions: A %s/%s, B %s/%s", ass, aav, bss, bav)
	}
}

func openBolt(t *testing.T) *store.Bolt {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// Mutations made on either master are seen by both, whole.
func TestTwoMastersConverge(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	p.sync()
	if _, err := p.a.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n2"}); err != nil {
		t.Fatal(err)
	}
	p.sync()
	if _, err := p.b.Stop(ctx, "n1"); err != nil {
		t.Fatalf("Stop(n1) on B: %v", err)
	}
	if _, err := p.b.SetDesiredVersion(ctx, VersionChange{StorageServerVersion: "1.2.3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.b.Revoke(ctx, "a9", "lost"); err != nil {
		t.Fatal(err)
	}
	p.sync()
	sameView(t, p)
	a, err := p.a.Agent("a1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Desired.Generation != 5 || a.Desired.StorageServerVersion != "1.2.3" || len(a.Desired.Nodes) != 1 || a.Desired.Nodes[0].NodeID != "n2" || a.Master != "A" {
		t.Errorf("A sees a1 desired %+v (master %q), want generation 5 (register, 2 spawns, stop, version), storage-server 1.2.3, only n2, master A", a.Desired, a.Master)
	}
	if _, ok := p.a.CertRevoked("a9", nil, time.Time{}); !ok {
		t.Error("A does not refuse a9, revoked on B")
	}
	// A writes the record B changed last: no conflict left behind.
	if _, err := p.a.Stop(ctx, "n2"); err != nil {
		t.Fatalf("Stop(n2) on A after B's changes: %v", err)
	}
	p.sync()
	sameView(t, p)
}

// Two masters hammer one agent: every acknowledged change is in the final
// state, each exactly once.
func TestNoLostUpdate(t *testing.T) {
	st := &conflictCounter{Store: openBolt(t)}
	testNoLostUpdate(t, st, Options{})
	st.mu.Lock()
	defer st.mu.Unlock()
	t.Logf("%d of %d commits lost on a condition", st.conflicts, st.commits)
	if st.conflicts == 0 {
		t.Error("no commit conflicted: the test did not make the masters race")
	}
}

// conflictCounter counts the commits that failed on a condition.
type conflictCounter struct {
	store.Store
	mu                 sync.Mutex
	commits, conflicts int
}

func (c *conflictCounter) ApplyIf(ctx context.Context, conds []store.Cond, ops []store.Op) (store.Revision, error) {
	rev, err := c.Store.ApplyIf(ctx, conds, ops)
	c.mu.Lock()
	c.commits++
	if errors.Is(err, store.ErrConflict) {
		c.conflicts++
	}
	c.mu.Unlock()
	return rev, err
}

func testNoLostUpdate(t *testing.T, st store.Store, opts Options) {
	p := &pair{t: t, st: st, clock: newFakeClock(), live: &liveSet{alive: map[string]bool{"A": true, "B": true}, leader: "B"}}
	testNoLostUpdatePair(t, p, opts)
}

// testNoLostUpdatePair opens A and B of p (its stores, clock and live set
// set) and hammers them.
func testNoLostUpdatePair(t *testing.T, p *pair, opts Options) {
	ctx := context.Background()
	st := p.st
	p.cancel, p.done = map[*Fleet]context.CancelFunc{}, map[*Fleet]chan struct{}{}
	p.a = p.open("A", opts)
	p.b = p.open("B", opts)
	p.cleanup()
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	p.sync()
	var mu sync.Mutex
	spawned, stopped, recorded := map[string]bool{}, map[string]bool{}, 0
	var wg sync.WaitGroup
	for _, side := range []struct {
		name string
		f    *Fleet
	}{{"a", p.a}, {"b", p.b}} {
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 15 {
					id := fmt.Sprintf("%s%d-n%d", side.name, w, i)
					if _, err := side.f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: id}); err != nil {
						if !errors.Is(err, ErrUnavailable) {
							t.Errorf("Spawn(%s): %v", id, err)
						}
						continue
					}
					mu.Lock()
					spawned[id] = true
					mu.Unlock()
					if i%3 == 0 {
						if _, err := side.f.Stop(ctx, id); err == nil {
							mu.Lock()
							stopped[id] = true
							mu.Unlock()
						} else if !errors.Is(err, ErrUnavailable) {
							t.Errorf("Stop(%s): %v", id, err)
						}
					}
					if err := side.f.Record(ctx, EventAgentEnrolled, "a1", id); err == nil {
						mu.Lock()
						recorded++
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	p.sync()
	sameView(t, p)
	if len(spawned) < 60 {
		t.Errorf("only %d of 90 spawns acknowledged", len(spawned))
	}
	a, err := p.b.Agent("a1")
	if err != nil {
		t.Fatal(err)
	}
	// Each acknowledged spawn and stop bumped the generation exactly once.
	if want := uint64(1 + len(spawned) + len(stopped)); a.Desired.Generation != want {
		t.Errorf("generation %d, want %d (1 + %d spawns + %d stops): an update was lost", a.Desired.Generation, want, len(spawned), len(stopped))
	}
	nodes, _ := p.b.Nodes("a1")
	got := map[string]bool{}
	for _, n := range nodes {
		got[n.ID] = true
		if n.Desired == stopped[n.ID] {
			t.Errorf("node %s desired=%v, stopped acknowledged=%v", n.ID, n.Desired, stopped[n.ID])
		}
	}
	for id := range spawned {
		if !got[id] {
			t.Errorf("acknowledged node %s is missing", id)
		}
	}
	if len(got) != len(spawned) {
		t.Errorf("%d nodes, %d acknowledged spawns", len(got), len(spawned))
	}
	// The persisted log: each key holds its own seq, generations in spawn
	// events strictly increase, and every acknowledged change has its event.
	counts := map[string]int{}
	var gens []int
	var last uint64
	err = st.Scan(ctx, store.TableEvents, func(k, v []byte) error {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(k) != e.Seq || e.Seq <= last {
			t.Errorf("event key %x holds seq %d after %d", k, e.Seq, last)
		}
		last = e.Seq
		counts[e.Type]++
		if e.Type == EventNodeSpawnRequested || e.Type == EventNodeStopRequested {
			var g int
			fmt.Sscanf(e.Message, "generation %d", &g)
			gens = append(gens, g)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(gens); i++ {
		if gens[i] <= gens[i-1] {
			t.Errorf("generations in the log do not strictly increase: %v", gens)
			break
		}
	}
	if counts[EventNodeSpawnRequested] != len(spawned) || counts[EventNodeStopRequested] != len(stopped) || counts[EventAgentEnrolled] != recorded {
		t.Errorf("events: %d spawn, %d stop, %d recorded; acknowledged %d, %d, %d", counts[EventNodeSpawnRequested], counts[EventNodeStopRequested], counts[EventAgentEnrolled], len(spawned), len(stopped), recorded)
	}
}

// An agent heartbeating one master is healthy on both; the other master
// never sweeps it while its master lives.
func TestHeartbeatOnOneMasterOnlineOnBoth(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		p.clock.Advance(5 * time.Second)
		if _, err := p.a.Heartbeat(ctx, Report{AgentID: "a1"}); err != nil {
			t.Fatal(err)
		}
		for _, f := range []*Fleet{p.a, p.b} {
			if err := f.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.sync()
	for name, f := range map[string]*Fleet{"A": p.a, "B": p.b} {
		a, err := f.Agent("a1")
		if err != nil {
			t.Fatal(err)
		}
		if a.Health != Healthy || a.Master != "A" {
			t.Errorf("%s sees a1 %s on master %q, want healthy on A", name, a.Health, a.Master)
		}
		if c := f.Cluster(); c.HealthyAgents != 1 {
			t.Errorf("%s: cluster %+v, want 1 healthy agent", name, c)
		}
	}
	if n := countEvents(p.b, EventAgentDegraded, EventAgentOffline); n != 0 {
		t.Errorf("%d degraded/offline events for an agent heartbeating A", n)
	}
	// It moves to B.
	if _, err := p.b.Heartbeat(ctx, Report{AgentID: "a1"}); err != nil {
		t.Fatal(err)
	}
	p.sync()
	if a, _ := p.a.Agent("a1"); a.Master != "B" || a.Health != Healthy {
		t.Errorf("after a heartbeat on B, A sees a1 %s on %q, want healthy on B", a.Health, a.Master)
	}
}

func countEvents(f *Fleet, types ...string) int {
	n := 0
	for _, e := range f.Events(0, 0) {
		if slices.Contains(types, e.Type) {
			n++
		}
	}
	return n
}

// A's agents, last heard 20 s before A died, reach B within 10 s of the
// death: never declared degraded or offline.
func TestAgentsOfDeadMasterNotOfflineWhileTheyMove(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	for i := range 5 {
		if _, err := p.a.Register(ctx, reg(fmt.Sprintf("a%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	p.sync()
	p.clock.Advance(20 * time.Second)
	p.live.set("A", false)
	p.stopFollow(p.a)
	for step := range 20 {
		if err := p.b.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if step == 2 {
			for i := range 5 {
				if _, err := p.b.Heartbeat(ctx, Report{AgentID: fmt.Sprintf("a%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		p.clock.Advance(3 * time.Second)
		if step > 2 {
			for i := range 5 {
				if _, err := p.b.Heartbeat(ctx, Report{AgentID: fmt.Sprintf("a%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if n := countEvents(p.b, EventAgentDegraded, EventAgentOffline); n != 0 {
		t.Errorf("%d degraded/offline events for agents that moved to B within 10 s: %+v", n, p.b.Events(0, 0))
	}
	for _, a := range p.b.Agents() {
		if a.Health != Healthy || a.Master != "B" {
			t.Errorf("agent %s %s on %q, want healthy on B", a.ID, a.Health, a.Master)
		}
	}
}

// Agents of a dead master that never come back go offline on the leader,
// OfflineAfter after the death; a master that does not lead never does it.
func TestDeadMasterAgentsGoOfflineOnLeader(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	p.sync()
	p.clock.Advance(20 * time.Second)
	p.live.set("A", false)
	p.stopFollow(p.a)
	p.live.lead("nobody")
	for range 20 {
		p.clock.Advance(5 * time.Second)
		if err := p.b.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if a, _ := p.b.Agent("a1"); a.Health != Healthy {
		t.Fatalf("B, not leading, swept a1 of dead A: %s", a.Health)
	}
	p.live.lead("B")
	if err := p.b.Sweep(ctx); err != nil { // B sees A dead from now
		t.Fatal(err)
	}
	p.clock.Advance(DefaultOfflineAfter - time.Second)
	if err := p.b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := p.b.Agent("a1"); a.Health != Degraded {
		t.Errorf("a1 is %s %s after the leader saw A dead, want degraded", a.Health, DefaultOfflineAfter-time.Second)
	}
	if n := countEvents(p.b, EventAgentOffline); n != 0 {
		t.Fatalf("a1 offline before OfflineAfter from the death")
	}
	p.clock.Advance(time.Second)
	if err := p.b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if a, _ := p.b.Agent("a1"); a.Health != Offline || countEvents(p.b, EventAgentOffline) != 1 {
		t.Errorf("a1 is %s (%d offline events) OfflineAfter after A died, want offline once", a.Health, countEvents(p.b, EventAgentOffline))
	}
	v, _, err := p.st.Get(ctx, store.TableAgents, []byte("a1"))
	if err != nil {
		t.Fatal(err)
	}
	var rec agentRec
	if err := json.Unmarshal(v, &rec); err != nil || rec.Health != Offline {
		t.Errorf("persisted a1 health %q (%v), want offline", rec.Health, err)
	}
}

// Only the leader removes agents offline past the GC threshold, also those
// of another (alive) master.
func TestOnlyLeaderRunsGC(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{AgentGCThreshold: time.Hour})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(DefaultDegradedAfter)
	_ = p.a.Sweep(ctx)
	p.clock.Advance(DefaultOfflineAfter)
	if err := p.a.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	p.sync()
	if a, _ := p.b.Agent("a1"); a.Health != Offline {
		t.Fatalf("B sees a1 %s, want offline (written by A)", a.Health)
	}
	p.clock.Advance(2 * time.Hour)
	if err := p.a.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	p.sync()
	if _, err := p.a.Agent("a1"); err != nil {
		t.Fatalf("A, not leading, removed a1: %v", err)
	}
	if err := p.b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	p.sync()
	for name, f := range map[string]*Fleet{"A": p.a, "B": p.b} {
		if _, err := f.Agent("a1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: a1 after the leader's GC: %v, want not found", name, err)
		}
	}
	if n := countEvents(p.a, EventAgentRemoved); n != 1 {
		t.Errorf("%d AgentRemoved events, want 1", n)
	}
}

// Events recorded on one master reach the event watchers of the other, in
// sequence order, each once.
func TestEventsFromOtherMasterReachSubscribers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPair(t, openBolt(t), Options{})
	got := make(chan Event, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- p.b.Watch(ctx, WatchOptions{Follow: true}, func(e Event) error { got <- e; return nil })
	}()
	// Wait until the watcher is subscribed.
	for deadline := time.Now().Add(5 * time.Second); ; {
		p.b.mu.RLock()
		n := len(p.b.subs)
		p.b.mu.RUnlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watcher never subscribed")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 20 {
		f := p.a
		if i%4 == 3 {
			f = p.b
		}
		if err := f.Record(ctx, EventJoinTokenCreated, "", fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	for len(seqs) < 20 {
		select {
		case e := <-got:
			seqs = append(seqs, e.Seq)
			if e.Message != fmt.Sprintf("m%d", len(seqs)-1) {
				t.Errorf("event %d is %q", len(seqs)-1, e.Message)
			}
		case err := <-errc:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("B's watcher got %d of 20 events: %v", len(seqs), seqs)
		}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("seqs not in order: %v", seqs)
			break
		}
	}
}

// A follower that missed more than the store's watch history loads the
// tables again and keeps following; the liveness it tracks survives.
func TestFollowerRecoversFromCompaction(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{EventLogSize: 100})
	if _, err := p.b.Register(ctx, reg("b1")); err != nil {
		t.Fatal(err)
	}
	p.sync()
	p.stopFollow(p.b)
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range (2*store.MinWatchHistory + 200) / 16 {
				if err := p.a.Record(ctx, EventJoinTokenCreated, "", fmt.Sprintf("w%d-%d", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, err := p.a.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.st.Watch(ctx, store.TableAgents, p.b.loadRev+1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch from B's revision = %v, want ErrCompacted (test setup)", err)
	}
	p.follow(p.b)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, err := p.b.Node("n1"); err == nil && n.AgentID == "a1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B never caught up after the compaction")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.sync()
	if a, _ := p.b.Agent("b1"); a.Health != Healthy {
		t.Errorf("B's own agent b1 is %s after the reload, want healthy (liveness kept)", a.Health)
	}
	if _, err := p.b.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n2"}); err != nil {
		t.Fatalf("Spawn on B after the reload: %v", err)
	}
	p.sync()
	sameView(t, p)
}

// batchSizes records the most distinct keys one ApplyIf wrote.
type batchSizes struct {
	store.Store
	mu      sync.Mutex
	maxKeys int
	batches int
}

func (b *batchSizes) ApplyIf(ctx context.Context, conds []store.Cond, ops []store.Op) (store.Revision, error) {
	keys := map[string]bool{}
	for _, op := range ops {
		keys[op.Table+"/"+string(op.Key)] = true
	}
	b.mu.Lock()
	b.maxKeys = max(b.maxKeys, len(keys), len(conds))
	b.batches++
	b.mu.Unlock()
	return b.Store.ApplyIf(ctx, conds, ops)
}

// The committer splits group commits at Options.MaxBatchOps distinct keys,
// between mutations only; a mutation larger than that fails whole.
func TestMaxBatchOps(t *testing.T) {
	ctx := context.Background()
	st := &batchSizes{Store: openBolt(t)}
	f, err := New(ctx, Options{Store: st, MaxBatchOps: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if err := f.Record(ctx, EventJoinTokenCreated, "", fmt.Sprint(w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st.mu.Lock()
	if st.maxKeys > 8 {
		t.Errorf("a batch of %d keys, limit 8", st.maxKeys)
	}
	if st.batches >= 321 {
		t.Errorf("%d batches for 321 mutations: nothing was grouped", st.batches)
	}
	st.mu.Unlock()
	var nodes []NodeStatus
	for i := range 10 {
		nodes = append(nodes, NodeStatus{NodeID: fmt.Sprintf("n%d", i), State: NodeRunning})
	}
	r := reg("a2")
	r.Nodes = nodes
	if _, err := f.Register(ctx, r); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Register with 10 new nodes under an 8-key limit = %v, want ErrUnavailable", err)
	}
	if v, _, _ := st.Get(ctx, store.TableAgents, []byte("a2")); v != nil {
		t.Error("part of the refused mutation was written")
	}
}

// A deposed leader that still believes it leads writes nothing: its
// singleton writes carry the fence, which no longer holds.
func TestStaleLeaderFenced(t *testing.T) {
	ctx := context.Background()
	st := openBolt(t)
	p := newPair(t, st, Options{})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	elected, err := st.ApplyIf(ctx, nil, []store.Op{store.Put(store.TableMasters, []byte("leader"), []byte("B"))})
	if err != nil {
		t.Fatal(err)
	}
	p.live.mu.Lock()
	p.live.fence = []store.Cond{store.IfRevision(store.TableMasters, []byte("leader"), elected)}
	p.live.mu.Unlock()
	p.sync()
	p.live.set("A", false)
	p.stopFollow(p.a)
	if err := p.b.Sweep(ctx); err != nil { // B sees A dead
		t.Fatal(err)
	}
	// Another master is elected; B has not noticed.
	if _, err := st.ApplyIf(ctx, nil, []store.Op{store.Put(store.TableMasters, []byte("leader"), []byte("C"))}); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(DefaultOfflineAfter)
	if err := p.b.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	v, _, err := st.Get(ctx, store.TableAgents, []byte("a1"))
	if err != nil {
		t.Fatal(err)
	}
	var rec agentRec
	if err := json.Unmarshal(v, &rec); err != nil || rec.Health != Healthy {
		t.Errorf("persisted a1 health %q (%v) after a deposed leader's sweep, want healthy (fenced)", rec.Health, err)
	}
	if n := countEvents(p.b, EventAgentDegraded, EventAgentOffline); n != 0 {
		t.Errorf("%d liveness events written by a deposed leader", n)
	}
}

// Both masters record events at once: each master's watcher gets every
// committed event once, in strictly increasing sequence order.
func TestEventsFromBothMastersInOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPair(t, openBolt(t), Options{})
	type got struct {
		mu   sync.Mutex
		seqs []uint64
	}
	gots := map[*Fleet]*got{p.a: {}, p.b: {}}
	for f, g := range gots {
		go func() {
			_ = f.Watch(ctx, WatchOptions{Follow: true}, func(e Event) error {
				g.mu.Lock()
				g.seqs = append(g.seqs, e.Seq)
				g.mu.Unlock()
				return nil
			})
		}()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			f.mu.RLock()
			n := len(f.subs)
			f.mu.RUnlock()
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("watcher never subscribed")
			}
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for _, f := range []*Fleet{p.a, p.b} {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					if err := f.Record(ctx, EventJoinTokenCreated, "", fmt.Sprint(w, i)); err == nil {
						mu.Lock()
						acked++
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	p.sync()
	for f, g := range gots {
		name := map[*Fleet]string{p.a: "A", p.b: "B"}[f]
		deadline := time.Now().Add(10 * time.Second)
		for {
			g.mu.Lock()
			n := len(g.seqs)
			g.mu.Unlock()
			if n >= acked || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		g.mu.Lock()
		if len(g.seqs) != acked {
			t.Errorf("%s's watcher got %d events, %d acknowledged", name, len(g.seqs), acked)
		}
		for i := 1; i < len(g.seqs); i++ {
			if g.seqs[i] <= g.seqs[i-1] {
				t.Errorf("%s's watcher: seq %d after %d", name, g.seqs[i], g.seqs[i-1])
				break
			}
		}
		g.mu.Unlock()
	}
}

// An agent that moves to a master whose watch has not brought its record
// yet is found in the store, not told to register again.
func TestHeartbeatAheadOfTheWatch(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	p.stopFollow(p.b)
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.b.Heartbeat(ctx, Report{AgentID: "a1"}); err != nil {
		t.Fatalf("Heartbeat on B, which has not followed a1's registration: %v", err)
	}
	if a, err := p.b.Agent("a1"); err != nil || a.Master != "B" {
		t.Errorf("B: a1 = %+v, %v; want it attached to B", a, err)
	}
}

// A master that restarts and whose agents never come back writes them
// offline, so the other masters do not show them healthy forever.
func TestRestartedMasterSweepsItsAbsentAgents(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	p.stopFollow(p.a)
	p.a = p.open("A", Options{}) // A restarts
	for range 8 {
		p.clock.Advance(5 * time.Second)
		if err := p.a.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	p.sync()
	for name, f := range map[string]*Fleet{"A": p.a, "B": p.b} {
		if a, _ := f.Agent("a1"); a.Health != Offline {
			t.Errorf("%s sees a1 %s 40 s after A restarted without it, want offline", name, a.Health)
		}
	}
}

// The applied generation an agent reports to its master shows on every
// master (found by hand: the other masters said "applied 0" for agents
// that had converged long before).
func TestAppliedGenerationOnEveryMaster(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, openBolt(t), Options{})
	if _, err := p.a.Register(ctx, reg("a1")); err != nil {
		t.Fatal(err)
	}
	p.sync()
	n, err := p.b.Spawn(ctx, SpawnRequest{AgentID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	p.sync()
	d, err := p.a.Heartbeat(ctx, Report{AgentID: "a1", AppliedGeneration: 0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.Heartbeat(ctx, Report{AgentID: "a1", AppliedGeneration: d.Generation,
		Nodes: []NodeStatus{{NodeID: n.ID, State: NodeRunning}}}); err != nil {
		t.Fatal(err)
	}
	p.sync()
	for name, f := range map[string]*Fleet{"A": p.a, "B": p.b} {
		a, err := f.Agent("a1")
		if err != nil {
			t.Fatal(err)
		}
		if a.AppliedGeneration != d.Generation || a.Desired.Generation != d.Generation {
			t.Errorf("%s sees a1 applied %d of %d, want %d", name, a.AppliedGeneration, a.Desired.Generation, d.Generation)
		}
	}
}
