package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// etcdStores starts an etcd member for t and returns an opener of stores
// on it, each with its own client, all on one fresh prefix.
func etcdStores(t *testing.T) func() *etcdstore.Store {
	t.Helper()
	c := etcdtest.Start(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "/sutra-fleet-" + hex.EncodeToString(b) + "/"
	return func() *etcdstore.Store {
		s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.Endpoints(), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

// Two masters, each with its own etcd client, on one real etcd: every
// acknowledged change survives their concurrent writes, with the
// committer's batches bounded by etcd's --max-txn-ops.
func TestNoLostUpdateOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	open := etcdStores(t)
	stA, stB := open(), open()
	ca, cb := &conflictCounter{Store: stA}, &conflictCounter{Store: stB}
	p := &pair{t: t, st: ca, stB: cb, approx: true, clock: newFakeClock(), live: &liveSet{alive: map[string]bool{"A": true, "B": true}, leader: "B"}}
	testNoLostUpdatePair(t, p, Options{MaxBatchOps: stA.MaxTxnOps()})
	ca.mu.Lock()
	cb.mu.Lock()
	defer ca.mu.Unlock()
	defer cb.mu.Unlock()
	t.Logf("commits lost on a condition: A %d of %d, B %d of %d", ca.conflicts, ca.commits, cb.conflicts, cb.commits)
}

// Three masters on one real etcd register agents all at once, as when a
// whole fleet comes back: each registration writes an event, and the
// event log's sequence numbers are one order for the whole grid, so the
// masters' group commits collide on them. Every registration must still
// succeed (none given up after the fleet's tries), and each master must
// hold every agent and the same event log.
func TestSimultaneousRegistrationsOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	open := etcdStores(t)
	live := &liveSet{alive: map[string]bool{"A": true, "B": true, "C": true}, leader: "A"}
	clock := newFakeClock()
	var fleets []*Fleet
	var counters []*conflictCounter
	for _, id := range []string{"A", "B", "C"} {
		s := open()
		cc := &conflictCounter{Store: s}
		f, err := New(context.Background(), Options{Store: cc, Clock: clock, Coordinator: &testCoord{id: id, live: live}, MasterVersion: "1.0.0", MaxBatchOps: s.MaxTxnOps()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = f.Follow(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		fleets = append(fleets, f)
		counters = append(counters, cc)
	}
	const perMaster = 300
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for m, f := range fleets {
		sem := make(chan struct{}, 64)
		for i := range perMaster {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				r := reg(fmt.Sprintf("agent-%d-%03d", m, i))
				for j := range 3 { // as bench/fleet's agents: three running nodes each
					r.Nodes = append(r.Nodes, NodeStatus{NodeID: fmt.Sprintf("%s-n%d", r.AgentID, j), State: NodeRunning, PID: int64(j + 1), Endpoint: "10.0.0.1:7100", Version: "1.0.0"})
				}
				if _, err := f.Register(ctx, r); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			})
		}
	}
	wg.Wait()
	took := time.Since(start)
	commits, conflicts := 0, 0
	for _, cc := range counters {
		cc.mu.Lock()
		commits, conflicts = commits+cc.commits, conflicts+cc.conflicts
		cc.mu.Unlock()
	}
	t.Logf("%d registrations on 3 masters in %s (%.0f/s); %d of %d commits lost on a condition", 3*perMaster, took.Round(time.Millisecond),
		float64(3*perMaster)/took.Seconds(), conflicts, commits)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d registrations failed; first: %v", n, 3*perMaster, firstErr.Load())
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, f := range fleets {
		for len(f.Agents()) != 3*perMaster || f.LastSeq() < 3*perMaster*4 {
			if time.Now().After(deadline) {
				t.Fatalf("a master holds %d agents and %d events, want %d and %d", len(f.Agents()), f.LastSeq(), 3*perMaster, 3*perMaster*4)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
