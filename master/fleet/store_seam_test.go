package fleet

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// seamStore is any store.Store with the backend hidden: the fleet sees the
// interface only. It checks every op of every batch against the limits
// every backend accepts (store.ValidateOp), so a fleet record that a
// second backend would refuse fails here first.
type seamStore struct {
	store.Store
	t *testing.T

	mu      sync.Mutex
	batches int
}

func (s *seamStore) Apply(ctx context.Context, ops []store.Op) error {
	for _, op := range ops {
		if err := store.ValidateOp(op); err != nil {
			s.t.Errorf("the fleet wrote an op a backend may refuse: %v", err)
		}
	}
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
	return s.Store.Apply(ctx, ops)
}

func (s *seamStore) ApplyIf(ctx context.Context, conds []store.Cond, ops []store.Op) (store.Revision, error) {
	for _, op := range ops {
		if err := store.ValidateOp(op); err != nil {
			s.t.Errorf("the fleet wrote an op a backend may refuse: %v", err)
		}
	}
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
	return s.Store.ApplyIf(ctx, conds, ops)
}

// The fleet needs nothing of a backend beyond store.Store: it runs, and
// reloads, on the interface alone, and what it commits is visible to a
// store watcher (how another master will follow it) as whole records.
func TestFleetRunsOnTheStoreInterfaceAlone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bolt, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := &seamStore{Store: bolt, t: t}
	clock := newFakeClock()
	f, err := New(ctx, Options{Store: st, Clock: clock, MasterVersion: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	agents, err := st.Watch(wctx, store.TableAgents, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Register(ctx, Registration{AgentID: "a1", Hostname: "h1", Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1", Port: 7100}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-agents:
		var rec agentRec
		if err := json.Unmarshal(c.Value, &rec); err != nil || rec.ID != "a1" || string(c.Key) != "a1" {
			t.Errorf("watched agent change %s=%s (%v), want the record of a1", c.Key, c.Value, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no agent change watched after Register")
	}
	st.mu.Lock()
	batches := st.batches
	st.mu.Unlock()
	if batches == 0 {
		t.Fatal("the fleet committed nothing through the interface")
	}

	if err := bolt.Close(); err != nil {
		t.Fatal(err)
	}
	bolt, err = store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bolt.Close() })
	f, err = New(ctx, Options{Store: &seamStore{Store: bolt, t: t}, Clock: clock, MasterVersion: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.Node("n1"); err != nil || n.AgentID != "a1" {
		t.Fatalf("after reload on the interface: Node(n1) = %+v, %v; want n1 on a1", n, err)
	}
}
