package rollout

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// Finished rollouts beyond KeepFinished are deleted from the store, oldest
// first; active ones never are.
func TestFinishedRolloutsArePruned(t *testing.T) {
	s := newSim(2, "1.0.0")
	clk := &clock{t: t0}
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := New(t.Context(), Options{Store: st, Fleet: s, Now: clk.Now, KeepFinished: 3})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 6 {
		v := "1.1.0"
		if i%2 == 1 {
			v = "1.0.0"
		}
		r, err := c.Start(t.Context(), spec(v))
		if err != nil {
			t.Fatalf("rollout %d: %v", i, err)
		}
		ids = append(ids, r.ID)
		if _, err := c.Abort(t.Context(), r.ID); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Minute)
	}
	active, err := c.Start(t.Context(), spec("1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	c.Tick(t.Context())
	var stored []string
	if err := st.Scan(t.Context(), store.TableRollouts, func(k, _ []byte) error { stored = append(stored, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 4 {
		t.Fatalf("stored rollouts %v, want the 3 newest finished and the active one", stored)
	}
	for _, old := range ids[:3] {
		if _, err := c.Get(old); !errors.Is(err, ErrNotFound) {
			t.Errorf("old finished rollout %s kept: %v", old, err)
		}
	}
	for _, id := range append(ids[3:], active.ID) {
		if _, err := c.Get(id); err != nil {
			t.Errorf("rollout %s pruned: %v", id, err)
		}
	}
}

// Two masters' controllers on one store: what one creates or changes the
// other sees (Follow); only the one whose fence holds steps.
func TestControllersOnOneStoreFollowAndOnlyTheLeaderSteps(t *testing.T) {
	s := newSim(3, "1.0.0")
	clk := &clock{t: t0}
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	leaderFence := func() ([]store.Cond, bool) { return nil, true }
	notLeader := func() ([]store.Cond, bool) { return nil, false }
	a, err := New(t.Context(), Options{Store: st, Fleet: s, Now: clk.Now, Fence: notLeader})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(t.Context(), Options{Store: st, Fleet: s, Now: clk.Now, Fence: leaderFence})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = a.Follow(ctx) }()
	go func() { _ = b.Follow(ctx) }()
	r, err := a.Start(t.Context(), spec("1.1.0")) // created on the follower
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the leader sees the rollout", func() bool { _, err := b.Get(r.ID); return err == nil })
	a.Tick(t.Context()) // the follower does not step
	if got, _ := a.Get(r.ID); got.State != Pending || len(s.sets) != 0 {
		t.Fatalf("the follower stepped: %s, %d sets", got.State, len(s.sets))
	}
	for range 100 {
		b.Tick(t.Context())
		clk.Add(time.Second)
	}
	eventually(t, "the follower sees the leader's progress", func() bool { got, _ := a.Get(r.ID); return got.State == Completed })

	// A deposed leader's fence fails: its step writes nothing.
	r2, err := b.Start(t.Context(), spec("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	stale := []store.Cond{store.IfRevision(store.TableMasters, []byte("election/1"), 99)}
	b.opts.Fence = func() ([]store.Cond, bool) { return stale, true }
	before, _ := b.Get(r2.ID)
	b.Tick(t.Context())
	after, _ := b.Get(r2.ID)
	_, rev, _ := st.Get(t.Context(), store.TableRollouts, []byte(r2.ID))
	if after.State != before.State || len(s.sets) != 3 || rev == 0 {
		t.Fatalf("a fenced-off step changed something: %s -> %s, %d sets", before.State, after.State, len(s.sets))
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scanHook runs afterScan once after the first Scan of the rollouts table
// and holds Watch open without changes, signalling watching: the window
// between Follow's snapshot and its watch, held still.
type scanHook struct {
	store.Store
	afterScan func()
	watching  chan struct{}
}

func (h *scanHook) Scan(ctx context.Context, table string, fn func(k, v []byte) error) error {
	err := h.Store.Scan(ctx, table, fn)
	if f := h.afterScan; f != nil && table == store.TableRollouts {
		h.afterScan = nil
		f()
	}
	return err
}

func (h *scanHook) Watch(ctx context.Context, table string, from store.Revision) (<-chan store.Change, error) {
	ch := make(chan store.Change)
	go func() { <-ctx.Done(); close(ch) }()
	close(h.watching)
	return ch, nil
}

// A rollout started on this master while its Follow takes its snapshot
// stays known here: Follow forgets only what the store lost before the
// snapshot (it dropped the new rollout until the watch brought it back;
// seen in CI as "the follower stepped: , 0 sets").
func TestFollowKeepsARolloutStartedDuringItsSnapshot(t *testing.T) {
	s := newSim(3, "1.0.0")
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := &scanHook{Store: st, watching: make(chan struct{})}
	c, err := New(t.Context(), Options{Store: h, Fleet: s, Now: (&clock{t: t0}).Now})
	if err != nil {
		t.Fatal(err)
	}
	var started Rollout
	h.afterScan = func() {
		var err error
		if started, err = c.Start(t.Context(), spec("1.1.0")); err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = c.Follow(ctx) }()
	select {
	case <-h.watching:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not reach its watch")
	}
	if started.ID == "" {
		t.Fatal("no rollout started")
	}
	if _, err := c.Get(started.ID); err != nil {
		t.Fatalf("rollout %s started during Follow's snapshot: Get = %v, want it known", started.ID, err)
	}
}
