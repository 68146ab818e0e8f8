// Package storetest is the contract of store.Store as a test suite: every
// backend runs Run against itself (the bbolt backend in master/store does),
// so that the fleet can move between backends without a change to its
// logic. The suite needs only an Opener: a function that opens the same
// store each time it is called (the same data directory, the same etcd
// prefix), so that it can check what survives a Close.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// Opener opens one store: each call opens the same, durable, data.
type Opener func() (store.Store, error)

// NewBackend returns an Opener of an empty store of its own, for one test.
type NewBackend func(t *testing.T) Opener

// Run runs the contract suite; each subtest gets a fresh backend.
func Run(t *testing.T, newBackend NewBackend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"OrderWithinBatch", testOrderWithinBatch},
		{"Atomicity", testAtomicity},
		{"InvalidOps", testInvalidOps},
		{"DurableAcrossReopen", testDurableAcrossReopen},
		{"Revisions", testRevisions},
		{"CompareAndSwap", testCompareAndSwap},
		{"DeleteSemantics", testDeleteSemantics},
		{"ScanOrder", testScanOrder},
		{"ValuesAreCopies", testValuesAreCopies},
		{"WatchDeliversInOrderOnce", testWatchInOrderOnce},
		{"WatchReplayAndCompaction", testWatchReplay},
		{"SlowWatcherNeverBlocksCommits", testSlowWatcher},
		{"WatchEndsWithContextAndClose", testWatchEnds}, // and a closed store refuses every call
		{"ConcurrentAppliers", testConcurrentAppliers},
		{"ContextCancellation", testContextCancellation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBackend(t)) })
	}
}

// Tables the suite writes to.
var (
	tA = store.TableAgents
	tB = store.TableNodes
)

const wait = 10 * time.Second

// mustOpen opens the store and closes it at the end of the test (a second
// Close of a store the test closed itself is allowed to fail).
func mustOpen(t *testing.T, open Opener) store.Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = s.Close() }) })
	return s
}

func put(table, key, value string) store.Op { return store.Put(table, []byte(key), []byte(value)) }
func del(table, key string) store.Op        { return store.Delete(table, []byte(key)) }

func apply(t *testing.T, s store.Store, ops ...store.Op) store.Revision {
	t.Helper()
	r, err := s.ApplyIf(context.Background(), nil, ops)
	if err != nil {
		t.Fatalf("ApplyIf(%d ops) = %v", len(ops), err)
	}
	return r
}

// dump returns table as "k=v" in scan order.
func dump(t *testing.T, s store.Store, table string) []string {
	t.Helper()
	var out []string
	err := s.Scan(context.Background(), table, func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%s) = %v", table, err)
	}
	return out
}

func get(t *testing.T, s store.Store, table, key string) (string, store.Revision, bool) {
	t.Helper()
	v, r, err := s.Get(context.Background(), table, []byte(key))
	if err != nil {
		t.Fatalf("Get(%s, %s) = %v", table, key, err)
	}
	if (v == nil) != (r == 0) {
		t.Fatalf("Get(%s, %s) = %q at revision %d: a value must have a revision and an absent key none", table, key, v, r)
	}
	return string(v), r, v != nil
}

func revision(t *testing.T, s store.Store) store.Revision {
	t.Helper()
	r, err := s.Revision(context.Background())
	if err != nil {
		t.Fatalf("Revision() = %v", err)
	}
	return r
}

func want(t *testing.T, what string, got, wantv []string) {
	t.Helper()
	if !slices.Equal(got, wantv) {
		t.Fatalf("%s = %q, want %q", what, got, wantv)
	}
}

func testOrderWithinBatch(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	apply(t, s,
		put(tA, "k", "1"), put(tA, "k", "2"), // the last op on a key wins
		put(tA, "gone", "x"), del(tA, "gone"),
		del(tA, "back"), put(tA, "back", "y"),
		put(tB, "k", "other table"),
	)
	want(t, "agents after one batch", dump(t, s, tA), []string{"back=y", "k=2"})
	want(t, "nodes after one batch", dump(t, s, tB), []string{"k=other table"})
	if err := s.Apply(context.Background(), nil); err != nil {
		t.Fatalf("Apply(no ops) = %v, want nil", err)
	}
}

func testAtomicity(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := context.Background()
	apply(t, s, put(tA, "a", "1"))
	r0 := revision(t, s)
	bad := []struct {
		op   store.Op
		want error
	}{
		{put("no-such-table", "x", "y"), store.ErrUnknownTable},
		{put(tA, "", "empty key"), store.ErrInvalidOp},
	}
	for _, b := range bad {
		ops := []store.Op{put(tA, "a", "changed"), put(tA, "b", "new"), del(tA, "a"), b.op}
		if err := s.Apply(ctx, ops); !errors.Is(err, b.want) {
			t.Errorf("Apply(batch with %+v) = %v, want %v", b.op, err, b.want)
		}
		if _, err := s.ApplyIf(ctx, nil, ops); !errors.Is(err, b.want) {
			t.Errorf("ApplyIf(batch with %+v) = %v, want %v", b.op, err, b.want)
		}
	}
	want(t, "agents after refused batches", dump(t, s, tA), []string{"a=1"})
	if r := revision(t, s); r != r0 {
		t.Errorf("Revision after refused batches = %d, want %d (unchanged)", r, r0)
	}
}

func testInvalidOps(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := context.Background()
	for _, op := range []store.Op{
		store.Put(tA, nil, []byte("v")),
		store.Put(tA, bytes.Repeat([]byte("k"), store.MaxKeySize+1), []byte("v")),
		store.Put(tA, []byte("k"), make([]byte, store.MaxValueSize+1)),
	} {
		if err := s.Apply(ctx, []store.Op{op}); !errors.Is(err, store.ErrInvalidOp) {
			t.Errorf("Apply(key %d bytes, value %d bytes) = %v, want ErrInvalidOp", len(op.Key), len(op.Value), err)
		}
	}
	// The limits themselves are accepted.
	big := store.Put(tA, bytes.Repeat([]byte("k"), store.MaxKeySize), make([]byte, store.MaxValueSize))
	if err := s.Apply(ctx, []store.Op{big}); err != nil {
		t.Errorf("Apply(key and value at their limits) = %v", err)
	}
	if err := s.Scan(ctx, "no-such-table", func(k, v []byte) error { return nil }); !errors.Is(err, store.ErrUnknownTable) {
		t.Errorf("Scan(unknown table) = %v, want ErrUnknownTable", err)
	}
	if _, _, err := s.Get(ctx, "no-such-table", []byte("k")); !errors.Is(err, store.ErrUnknownTable) {
		t.Errorf("Get(unknown table) = %v, want ErrUnknownTable", err)
	}
	if _, err := s.Watch(ctx, "no-such-table", 0); !errors.Is(err, store.ErrUnknownTable) {
		t.Errorf("Watch(unknown table) = %v, want ErrUnknownTable", err)
	}
	if _, err := s.ApplyIf(ctx, []store.Cond{store.IfAbsent("no-such-table", []byte("k"))}, nil); !errors.Is(err, store.ErrUnknownTable) {
		t.Errorf("ApplyIf(condition on an unknown table) = %v, want ErrUnknownTable", err)
	}
}

func testDurableAcrossReopen(t *testing.T, open Opener) {
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, put(tA, "a", "1"), put(tA, "b", "2"), put(tB, "n", "3"))
	r := apply(t, s, del(tA, "b"), put(tA, "c", "4"), put(tA, "empty", ""))
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s = mustOpen(t, open)
	want(t, "agents after reopen", dump(t, s, tA), []string{"a=1", "c=4", "empty="})
	want(t, "nodes after reopen", dump(t, s, tB), []string{"n=3"})
	if got := revision(t, s); got < r {
		t.Errorf("Revision after reopen = %d, want at least %d", got, r)
	}
	if _, kr, _ := get(t, s, tA, "c"); kr != r {
		t.Errorf("revision of agents/c after reopen = %d, want %d", kr, r)
	}
	if r2 := apply(t, s, put(tA, "d", "5")); r2 <= r {
		t.Errorf("first commit after reopen at revision %d, want above %d", r2, r)
	}
	// Changes committed before the reopen are replayed, or the revision is
	// no longer kept (ErrCompacted): never a silent gap.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, tA, r)
	switch {
	case errors.Is(err, store.ErrCompacted):
	case err != nil:
		t.Errorf("Watch(from %d, before the reopen) = %v, want a replay or ErrCompacted", r, err)
	default:
		if got := recv(t, ch, 1); got[0].Rev != r {
			t.Errorf("Watch(from %d) after reopen starts with %v, want revision %d", r, fmtChanges(got), r)
		}
	}
}

func testRevisions(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	r0 := revision(t, s)
	if r0 < 0 {
		t.Fatalf("Revision of a new store = %d, want >= 0", r0)
	}
	if _, r, ok := get(t, s, tA, "k"); ok || r != 0 {
		t.Fatalf("Get(absent) at revision %d, want 0", r)
	}
	r1 := apply(t, s, put(tA, "k", "1"), put(tB, "k", "1"))
	if r1 <= r0 {
		t.Fatalf("commit revision %d, want above %d", r1, r0)
	}
	if got := revision(t, s); got != r1 {
		t.Errorf("Revision after a commit at %d = %d", r1, got)
	}
	r2 := apply(t, s, put(tA, "k", "2"))
	if r2 <= r1 {
		t.Fatalf("second commit at revision %d, want above %d", r2, r1)
	}
	for _, c := range []struct {
		table, key string
		rev        store.Revision
	}{{tA, "k", r2}, {tB, "k", r1}} {
		if _, r, _ := get(t, s, c.table, c.key); r != c.rev {
			t.Errorf("revision of %s/%s = %d, want %d (its last write)", c.table, c.key, r, c.rev)
		}
	}
	// A check without writes reports the revision and changes nothing.
	r, err := s.ApplyIf(context.Background(), []store.Cond{store.IfRevision(tA, []byte("k"), r2)}, nil)
	if err != nil || r != r2 {
		t.Errorf("ApplyIf(holding condition, no ops) = %d, %v; want %d, nil", r, err, r2)
	}
}

func testCompareAndSwap(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := context.Background()
	k := []byte("leader")
	r1, err := s.ApplyIf(ctx, []store.Cond{store.IfAbsent(tA, k)}, []store.Op{put(tA, "leader", "m1")})
	if err != nil {
		t.Fatalf("create-if-absent = %v", err)
	}
	_, err = s.ApplyIf(ctx, []store.Cond{store.IfAbsent(tA, k)}, []store.Op{put(tA, "leader", "m2"), put(tA, "side", "effect")})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second create-if-absent = %v, want ErrConflict", err)
	}
	var ce *store.ConflictError
	if errors.As(err, &ce) && (ce.Rev != r1 || ce.Cond.Table != tA || string(ce.Cond.Key) != "leader") {
		t.Errorf("ConflictError = %+v, want agents/leader at revision %d", ce, r1)
	}
	want(t, "after a conflict", dump(t, s, tA), []string{"leader=m1"})
	if r := revision(t, s); r != r1 {
		t.Errorf("Revision after a conflict = %d, want %d", r, r1)
	}
	// Swap at the revision read: once.
	r2, err := s.ApplyIf(ctx, []store.Cond{store.IfRevision(tA, k, r1)}, []store.Op{put(tA, "leader", "m2")})
	if err != nil {
		t.Fatalf("swap at the read revision = %v", err)
	}
	if _, err := s.ApplyIf(ctx, []store.Cond{store.IfRevision(tA, k, r1)}, []store.Op{put(tA, "leader", "m3")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("swap at a stale revision = %v, want ErrConflict", err)
	}
	// Every condition must hold; a condition on one table does not see another.
	conds := []store.Cond{store.IfRevision(tA, k, r2), store.IfAbsent(tB, k), store.IfRevision(tA, []byte("nobody"), 1)}
	if _, err := s.ApplyIf(ctx, conds, []store.Op{put(tB, "leader", "x")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("ApplyIf with one failing condition of three = %v, want ErrConflict", err)
	}
	if _, err := s.ApplyIf(ctx, conds[:2], []store.Op{put(tB, "leader", "x")}); err != nil {
		t.Fatalf("ApplyIf with two holding conditions = %v", err)
	}
	// A deleted key is absent again: revision 0.
	apply(t, s, del(tA, "leader"))
	if _, err := s.ApplyIf(ctx, []store.Cond{store.IfAbsent(tA, k)}, []store.Op{put(tA, "leader", "m4")}); err != nil {
		t.Fatalf("create-if-absent after delete = %v", err)
	}
	if v, _, _ := get(t, s, tA, "leader"); v != "m4" {
		t.Errorf("leader = %q, want m4", v)
	}
}

func testDeleteSemantics(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	apply(t, s, put(tA, "a", "1"), put(tA, "b", "2"))
	if err := s.Apply(context.Background(), []store.Op{del(tA, "missing")}); err != nil {
		t.Fatalf("delete of a missing key = %v, want nil", err)
	}
	ra := apply(t, s, del(tA, "a"))
	if _, r, ok := get(t, s, tA, "a"); ok || r != 0 {
		t.Errorf("Get after delete: present=%v revision %d, want absent, 0", ok, r)
	}
	want(t, "agents after delete", dump(t, s, tA), []string{"b=2"})
	rb := apply(t, s, put(tA, "a", "again"))
	if _, r, _ := get(t, s, tA, "a"); r != rb || r <= ra {
		t.Errorf("revision of a recreated key = %d, want %d (after the delete's %d)", r, rb, ra)
	}
	// An empty value is a value, not a delete.
	apply(t, s, put(tA, "b", ""))
	v, r, ok := get(t, s, tA, "b")
	if !ok || v != "" || r == 0 {
		t.Errorf("Get(empty value) = %q present=%v revision %d, want an empty present value", v, ok, r)
	}
}

func testScanOrder(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := context.Background()
	keys := [][]byte{{0xff}, []byte("b"), []byte("a\x00"), []byte("ab"), []byte("a"), {0x00}, {0x00, 0x01}, []byte("B")}
	var ops []store.Op
	for i, k := range keys {
		ops = append(ops, store.Put(tA, k, []byte(strconv.Itoa(i))))
	}
	apply(t, s, ops...)
	var got [][]byte
	err := s.Scan(ctx, tA, func(k, v []byte) error {
		got = append(got, append([]byte(nil), k...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, bytes.Compare)
	if !slices.EqualFunc(got, sorted, bytes.Equal) {
		t.Fatalf("Scan order = %q, want ascending bytes %q", got, sorted)
	}
	stop := errors.New("stop")
	n := 0
	err = s.Scan(ctx, tA, func(k, v []byte) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Scan with a failing callback = %v after %d calls, want stop after 1", err, n)
	}
	if got := dump(t, s, tB); len(got) != 0 {
		t.Errorf("Scan(empty table) = %q", got)
	}
}

func testValuesAreCopies(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := context.Background()
	key, val := []byte("k"), []byte("value")
	if err := s.Apply(ctx, []store.Op{store.Put(tA, key, val)}); err != nil {
		t.Fatal(err)
	}
	copy(key, "x")
	copy(val, "XXXXX")
	v, _, err := s.Get(ctx, tA, []byte("k"))
	if err != nil || string(v) != "value" {
		t.Fatalf("Get after the caller reused its slices = %q, %v; want value", v, err)
	}
	copy(v, "YYYYY")
	if v2, _, _ := get(t, s, tA, "k"); v2 != "value" {
		t.Errorf("Get after the caller changed a returned value = %q, want value", v2)
	}
}

// recv reads n changes from ch.
func recv(t *testing.T, ch <-chan store.Change, n int) []store.Change {
	t.Helper()
	var out []store.Change
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(out) < n {
		select {
		case c, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d of %d changes: %v", len(out), n, fmtChanges(out))
			}
			out = append(out, c)
		case <-timer.C:
			t.Fatalf("watch: %d of %d changes after %s: %v", len(out), n, wait, fmtChanges(out))
		}
	}
	return out
}

func fmtChanges(cs []store.Change) []string {
	var out []string
	for _, c := range cs {
		v := "<deleted>"
		if !c.Deleted() {
			v = string(c.Value)
		}
		out = append(out, fmt.Sprintf("%d:%s/%s=%s", c.Rev, c.Table, c.Key, v))
	}
	return out
}

// normalize sorts the changes of each revision by key (the order within a
// revision is not part of the contract).
func normalize(cs []store.Change) []string {
	cs = slices.Clone(cs)
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].Rev != cs[j].Rev {
			return cs[i].Rev < cs[j].Rev
		}
		return bytes.Compare(cs[i].Key, cs[j].Key) < 0
	})
	return fmtChanges(cs)
}

// noMore checks that ch delivers nothing more for a moment.
func noMore(t *testing.T, ch <-chan store.Change) {
	t.Helper()
	select {
	case c, ok := <-ch:
		if ok {
			t.Errorf("unexpected change %v", fmtChanges([]store.Change{c}))
		}
	case <-time.After(50 * time.Millisecond):
	}
}

func testWatchInOrderOnce(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apply(t, s, put(tA, "before", "x"))
	ch, err := s.Watch(ctx, tA, 0)
	if err != nil {
		t.Fatal(err)
	}
	r1 := apply(t, s, put(tA, "a", "1"), put(tA, "b", "1"), put(tB, "other", "table"))
	r2 := apply(t, s, put(tA, "a", "2"), put(tA, "a", "3"), del(tA, "missing"))
	r3 := apply(t, s, del(tA, "b"), put(tA, "c", "tmp"), del(tA, "c"))
	apply(t, s, put(tB, "only", "nodes"))
	r5 := apply(t, s, put(tA, "d", ""))
	got := recv(t, ch, 5)
	want(t, "watched changes", normalize(got), []string{
		fmt.Sprintf("%d:%s/a=1", r1, tA), fmt.Sprintf("%d:%s/b=1", r1, tA),
		fmt.Sprintf("%d:%s/a=3", r2, tA),
		fmt.Sprintf("%d:%s/b=<deleted>", r3, tA),
		fmt.Sprintf("%d:%s/d=", r5, tA),
	})
	for i := 1; i < len(got); i++ {
		if got[i].Rev < got[i-1].Rev {
			t.Fatalf("changes out of revision order: %v", fmtChanges(got))
		}
	}
	if got[4].Value == nil {
		t.Errorf("an empty value arrived as a delete")
	}
	noMore(t, ch)
}

func testWatchReplay(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r0 := revision(t, s)
	var revs []store.Revision
	for i := range 5 {
		revs = append(revs, apply(t, s, put(tA, "k", strconv.Itoa(i))))
	}
	// From the revision before any commit: the whole history.
	all, err := s.Watch(ctx, tA, r0+1)
	if err != nil {
		t.Fatalf("Watch(from %d, changes since opening) = %v", r0+1, err)
	}
	got := recv(t, all, 5)
	for i, c := range got {
		if c.Rev != revs[i] || string(c.Value) != strconv.Itoa(i) {
			t.Fatalf("replayed %v, want k=0..4 at %v", fmtChanges(got), revs)
		}
	}
	// From the middle: the rest, then live changes.
	mid, err := s.Watch(ctx, tA, revs[3])
	if err != nil {
		t.Fatal(err)
	}
	r6 := apply(t, s, put(tA, "k", "live"))
	got = recv(t, mid, 3)
	if got[0].Rev != revs[3] || got[1].Rev != revs[4] || got[2].Rev != r6 {
		t.Errorf("Watch(from %d) = %v, want revisions %d, %d, %d", revs[3], fmtChanges(got), revs[3], revs[4], r6)
	}
	// From a future revision: nothing until then.
	future, err := s.Watch(ctx, tA, r6+2)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, put(tA, "k", "skipped"))
	r8 := apply(t, s, put(tA, "k", "seen"))
	if got := recv(t, future, 1); got[0].Rev != r8 {
		t.Errorf("Watch(from %d) = %v, want revision %d first", r6+2, fmtChanges(got), r8)
	}
	if _, err := s.Watch(ctx, tA, -1); err == nil {
		t.Errorf("Watch(from -1) = nil error")
	}
}

func testSlowWatcher(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, tA, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Commits go through while nobody reads the watch.
	const n = 600
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if err := s.Apply(ctx, []store.Op{put(tA, "k"+strconv.Itoa(i), "v")}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(4 * wait):
		t.Fatal("commits blocked by a watcher that does not read")
	}
	// What arrives is in order without gaps; a watch that ends early is
	// resumed from the last revision + 1 and then delivers the rest.
	var got []store.Change
	for len(got) < n {
		c, ok := <-ch
		if !ok {
			from := store.Revision(0)
			if len(got) > 0 {
				from = got[len(got)-1].Rev + 1
			} else {
				t.Fatal("watch closed before delivering anything")
			}
			if ch, err = s.Watch(ctx, tA, from); err != nil {
				t.Fatalf("resume Watch(from %d) after falling behind = %v", from, err)
			}
			continue
		}
		got = append(got, c)
	}
	for i, c := range got {
		if string(c.Key) != "k"+strconv.Itoa(i) || (i > 0 && c.Rev <= got[i-1].Rev) {
			t.Fatalf("change %d = %v after %v: want k%d, in revision order", i, fmtChanges([]store.Change{c}), fmtChanges(got[max(0, i-1):i]), i)
		}
	}
}

func testWatchEnds(t *testing.T, open Opener) {
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, tA, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	closedWithin(t, "watch after its context ended", ch)
	ch2, err := s.Watch(context.Background(), tA, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, "watch after Close", ch2)
	if err := s.Apply(context.Background(), []store.Op{put(tA, "k", "v")}); err == nil {
		t.Errorf("Apply after Close = nil error")
	}
	if _, err := s.Watch(context.Background(), tA, 0); err == nil {
		t.Errorf("Watch after Close = nil error")
	}
	if _, err := s.ApplyIf(context.Background(), nil, []store.Op{put(tA, "k", "v")}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ApplyIf after Close = %v, want ErrClosed", err)
	}
	if err := s.Scan(context.Background(), tA, func(k, v []byte) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Scan after Close = %v, want ErrClosed", err)
	}
	if _, _, err := s.Get(context.Background(), tA, []byte("k")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
}

func closedWithin(t *testing.T, what string, ch <-chan store.Change) {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("%s: channel still open after %s", what, wait)
		}
	}
}

// Concurrent read-modify-write loops on one counter with compare-and-swap
// lose no increment; plain concurrent batches all land.
func testConcurrentAppliers(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := context.Background()
	const workers, each = 8, 25
	key := []byte("counter")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var revMu sync.Mutex
	seen := map[store.Revision]bool{}
	for w := range workers {
		wg.Go(func() {
			for i := 0; i < each; {
				v, r, err := s.Get(ctx, tA, key)
				if err != nil {
					errs <- err
					return
				}
				n, _ := strconv.Atoi(string(v))
				nr, err := s.ApplyIf(ctx, []store.Cond{store.IfRevision(tA, key, r)}, []store.Op{
					store.Put(tA, key, []byte(strconv.Itoa(n+1))),
					put(tB, fmt.Sprintf("w%d-%03d", w, i), "x"),
				})
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				revMu.Lock()
				if seen[nr] {
					errs <- fmt.Errorf("revision %d returned to two commits", nr)
				}
				seen[nr] = true
				revMu.Unlock()
				i++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if v, _, _ := get(t, s, tA, "counter"); v != strconv.Itoa(workers*each) {
		t.Errorf("counter = %s after %d compare-and-swap increments", v, workers*each)
	}
	if got := len(dump(t, s, tB)); got != workers*each {
		t.Errorf("%d records written alongside the increments, want %d", got, workers*each)
	}
}

func testContextCancellation(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	apply(t, s, put(tA, "a", "1"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Apply(ctx, []store.Op{put(tA, "b", "2")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.ApplyIf(ctx, nil, []store.Op{put(tA, "b", "2")}); !errors.Is(err, context.Canceled) {
		t.Errorf("ApplyIf(cancelled) = %v, want context.Canceled", err)
	}
	if err := s.Scan(ctx, tA, func(k, v []byte) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan(cancelled) = %v, want context.Canceled", err)
	}
	if _, _, err := s.Get(ctx, tA, []byte("a")); !errors.Is(err, context.Canceled) {
		t.Errorf("Get(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.Watch(ctx, tA, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch(cancelled) = %v, want context.Canceled", err)
	}
	want(t, "agents after cancelled calls", dump(t, s, tA), []string{"a=1"})
}
