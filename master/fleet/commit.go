package fleet

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/store"
)

// Revisions a record in memory may carry besides a store revision (>= 0;
// 0: the record is not in the store yet).
const (
	// revDirty: a write of the record was lost to another master's, so
	// memory may differ from the store: the next write fails before it is
	// sent, and the record is read again (reconcile).
	revDirty store.Revision = -1
	// revUnknown: loaded by Scan, which reports no revisions; the store's
	// revision of the record is at most the load revision unless another
	// master changed it since. The committer reads it (Get) on first write.
	revUnknown store.Revision = -2
)

// keyRef names one record of the store.
type keyRef struct{ table, key string }

func (k keyRef) id() string { return k.table + "\x00" + k.key }

// condSpec is the condition a txn puts on one record it writes: the
// record is still at rev, or, when after is set, at the revision an
// earlier txn of this master that writes it commits at.
type condSpec struct {
	ref   keyRef
	rev   store.Revision
	bound store.Revision // revUnknown: the load revision
	after *ticket
}

// txn collects the store writes of one mutation, with the revision each
// record was read at. A record that cannot be encoded (validation at the
// boundary makes this a bug, such as a time outside JSON's four-digit
// years) is left out and remembered in err, which the caller gets back
// from wait: never a panic.
type txn struct {
	ops    []store.Op
	conds  []condSpec
	fence  []store.Cond
	events []Event
	err    error
	// actor is who caused the mutation (master/actor); empty: the master.
	actor string
}

// by is who caused the mutation, for event messages: the actor, or the
// master itself.
func (tx *txn) by() string {
	if tx.actor == "" {
		return actor.Master
	}
	return tx.actor
}

// cond records that the record table/key was read at rev (first one wins).
func (tx *txn) cond(table string, key []byte, rev store.Revision) {
	ref := keyRef{table, string(key)}
	for _, c := range tx.conds {
		if c.ref == ref {
			return
		}
	}
	tx.conds = append(tx.conds, condSpec{ref: ref, rev: rev})
}

// put encodes v as JSON and adds it to the batch, on condition that the
// record is still at rev.
func (tx *txn) put(table string, key []byte, v any, rev store.Revision) {
	b, err := json.Marshal(v)
	if err != nil {
		if tx.err == nil {
			tx.err = fmt.Errorf("encode %s record %q: %w", table, key, err)
		}
		return
	}
	tx.cond(table, key, rev)
	tx.ops = append(tx.ops, store.Put(table, key, b))
}

func (tx *txn) del(table string, key []byte, rev store.Revision) {
	tx.cond(table, key, rev)
	tx.ops = append(tx.ops, store.Delete(table, key))
}

func (tx *txn) putAgent(r *agentRec) { tx.put(store.TableAgents, []byte(r.ID), r, r.rev) }

func (tx *txn) putNode(n *Node) { tx.put(store.TableNodes, []byte(n.ID), n, n.rev) }

func (tx *txn) deleteNode(n *Node) { tx.del(store.TableNodes, []byte(n.ID), n.rev) }

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// ticket is one enqueued txn: done is closed once it committed (err nil,
// rev its revision) or failed.
type ticket struct {
	done chan struct{}
	err  error
	rev  store.Revision
	// after is the commit of the records that were encoded, waited for
	// before err is returned.
	after *ticket

	ops    []store.Op
	conds  []condSpec
	fence  []store.Cond
	keys   []keyRef
	events []Event
	// deps fail this txn when they fail (the previous event's txn).
	deps []*ticket
}

// enqueue hands tx to the committer; the caller holds f.mu, which keeps the
// commit order equal to the order of the in-memory changes. A record with
// a write of this master in flight is conditioned on that write's commit.
// If a record of tx could not be encoded, the others are still committed
// and the returned ticket carries the encoding error.
func (f *Fleet) enqueue(tx *txn) *ticket {
	var t *ticket
	if len(tx.ops) > 0 {
		t = &ticket{done: make(chan struct{}), ops: tx.ops, fence: tx.fence, events: tx.events}
		seen := make(map[keyRef]bool, len(tx.ops))
		for _, op := range tx.ops {
			ref := keyRef{op.Table, string(op.Key)}
			if !seen[ref] {
				seen[ref] = true
				t.keys = append(t.keys, ref)
			}
		}
		t.conds = make([]condSpec, 0, len(tx.conds))
		for _, c := range tx.conds {
			if p := f.inflight[c.ref.id()]; p != nil {
				c.after = p
				t.deps = append(t.deps, p)
			} else if c.rev == revUnknown {
				c.bound = f.loadRev
			}
			t.conds = append(t.conds, c)
		}
		if len(tx.events) > 0 {
			if f.lastEventTicket != nil {
				t.deps = append(t.deps, f.lastEventTicket)
			}
			f.lastEventTicket = t
		}
		for _, k := range t.keys {
			f.inflight[k.id()] = t
		}
		f.com.enqueue(t)
	}
	if tx.err == nil {
		return t
	}
	return &ticket{done: closed, err: &Error{Kind: KindInternal, Msg: "the master could not encode the change (a bug: please report it with the master's log)", Err: tx.err}, after: t}
}

// joinTickets is one ticket for several: done when all are, failed with
// the first failure, naming every record they write (for reconcile).
func joinTickets(ts []*ticket) *ticket {
	ts = slices.DeleteFunc(ts, func(t *ticket) bool { return t == nil })
	switch len(ts) {
	case 0:
		return nil
	case 1:
		return ts[0]
	}
	j := &ticket{done: make(chan struct{})}
	for _, t := range ts {
		for u := t; u != nil; u = u.after {
			j.keys = append(j.keys, u.keys...)
		}
	}
	go func() {
		defer close(j.done)
		for _, t := range ts {
			for u := t; u != nil; u = u.after {
				<-u.done
				if j.err == nil && u.err != nil {
					j.err = u.err
				}
			}
		}
	}()
	return j
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// errChanged is the error of a mutation that lost to other masters' writes
// every time it was tried.
var errChanged = &Error{Kind: KindUnavailable, Msg: "the fleet changed under this request (other masters wrote the same records): retry"}

// wait blocks until t is durable (nil t: nothing to write).
func (f *Fleet) wait(ctx context.Context, t *ticket) error {
	if t == nil {
		return nil
	}
	if t.after != nil {
		_ = f.wait(ctx, t.after)
	}
	select {
	case <-t.done:
		if fe, ok := t.err.(*Error); ok {
			f.log.Error("fleet change not saved", "err", fe)
			return fe
		}
		if errors.Is(t.err, store.ErrConflict) {
			return &Error{Kind: KindUnavailable, Msg: errChanged.Msg, Err: t.err}
		}
		if t.err != nil {
			f.log.Error("commit fleet state", "err", t.err)
			return &Error{Kind: KindUnavailable, Msg: "the master could not save the change (check its disk and log), then retry", Err: t.err}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxTries bounds how often a mutation is tried against a store other
// masters write too.
const maxTries = 8

// retry runs op (which changes memory under f.mu and returns the ticket of
// its writes, or a refusal) until its writes commit. A write that lost to
// another master's (store.ErrConflict) has its records read again from the
// store and the whole operation is run again, on the new state, up to
// maxTries times with a little jitter.
func (f *Fleet) retry(ctx context.Context, op func() (*ticket, error)) error {
	var err error
	for try := range maxTries {
		var t *ticket
		t, err = op()
		if err != nil {
			return err
		}
		err = f.wait(ctx, t)
		if err == nil || !errors.Is(err, store.ErrConflict) {
			return err
		}
		f.reconcileTicket(ctx, t)
		d := time.Duration(rand.Int64N(int64(time.Millisecond)<<min(try, 5))) + 100*time.Microsecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	f.log.Warn("fleet change lost to other masters", "tries", maxTries, "err", err)
	return err
}

// reconcileTicket reads again the records of t's chain of lost txns.
func (f *Fleet) reconcileTicket(ctx context.Context, t *ticket) {
	for ; t != nil; t = t.after {
		f.reconcile(ctx, t.keys)
	}
}

// committer group-commits txns in enqueue order: while one batch is being
// written, later txns accumulate and go out together in the next, as one
// ApplyIf with the union of their conditions. A batch that fails on a
// condition is committed again txn by txn to find the losers.
type committer struct {
	st     store.Store
	maxOps int
	// finished runs for each txn once its outcome is known, before its
	// done channel is closed.
	finished func(t *ticket)

	mu      sync.Mutex
	pending []*ticket
	running bool
}

func newCommitter(st store.Store, maxOps int, finished func(*ticket)) *committer {
	return &committer{st: st, maxOps: maxOps, finished: finished}
}

func (c *committer) enqueue(t *ticket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, t)
	if !c.running {
		c.running = true
		go c.drain()
	}
}

func (c *committer) drain() {
	for {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		ts := c.pending
		c.pending = nil
		c.mu.Unlock()
		for len(ts) > 0 {
			n := c.batchLen(ts)
			if n == 0 {
				c.finish(ts[0], fmt.Errorf("a change of %d records is larger than the store's batch limit of %d: %w", len(ts[0].keys), c.maxOps, store.ErrInvalidOp))
				ts = ts[1:]
				continue
			}
			c.commit(ts[:n])
			ts = ts[n:]
		}
	}
}

// batchLen is how many txns of ts, from the first, fit in one batch of at
// most maxOps distinct keys written and conditioned (0: the first alone
// is too large). Batches are split only between txns.
func (c *committer) batchLen(ts []*ticket) int {
	if c.maxOps <= 0 {
		return len(ts)
	}
	keys, conds := map[string]bool{}, map[string]bool{}
	for i, t := range ts {
		for _, k := range t.keys {
			keys[k.id()] = true
		}
		for _, cd := range t.conds {
			conds[cd.ref.id()] = true
		}
		for _, cd := range t.fence {
			conds[cd.Table+"\x00"+string(cd.Key)] = true
		}
		if len(keys) > c.maxOps || len(conds) > c.maxOps {
			return i
		}
	}
	return len(ts)
}

func (c *committer) finish(t *ticket, err error) {
	t.err = err
	if c.finished != nil {
		c.finished(t)
	}
	close(t.done)
}

// commit writes ts as one batch; the write must happen even if the
// callers gave up waiting.
func (c *committer) commit(ts []*ticket) {
	ctx := context.Background()
	in := make(map[*ticket]bool, len(ts))
	for _, t := range ts {
		in[t] = true
	}
	var conds []store.Cond
	var ops []store.Op
	var live []*ticket
	type ck struct {
		table, key string
		rev        store.Revision
	}
	dedup := map[ck]bool{}
	for _, t := range ts {
		tc, err := c.resolve(ctx, t, in)
		if err != nil {
			delete(in, t)
			c.finish(t, err)
			continue
		}
		for _, cd := range tc {
			k := ck{cd.Table, string(cd.Key), cd.Rev}
			if !dedup[k] {
				dedup[k] = true
				conds = append(conds, cd)
			}
		}
		ops = append(ops, t.ops...)
		live = append(live, t)
	}
	if len(live) == 0 {
		return
	}
	rev, err := c.st.ApplyIf(ctx, conds, ops)
	if err == nil {
		for _, t := range live {
			t.rev = rev
			c.finish(t, nil)
		}
		return
	}
	if errors.Is(err, store.ErrConflict) && len(live) > 1 {
		for _, t := range live {
			c.commit([]*ticket{t})
		}
		return
	}
	for _, t := range live {
		c.finish(t, err)
	}
}

// resolve returns t's conditions for a batch holding the txns in: a
// condition on an earlier txn of the batch is dropped (the batch is
// atomic), one on an earlier txn already committed becomes its revision;
// if that txn failed, t fails too.
func (c *committer) resolve(ctx context.Context, t *ticket, in map[*ticket]bool) ([]store.Cond, error) {
	for _, d := range t.deps {
		if in[d] {
			continue
		}
		<-d.done // earlier in enqueue order: already finished
		if d.err != nil {
			return nil, fmt.Errorf("an earlier change it builds on failed: %w", store.ErrConflict)
		}
	}
	out := make([]store.Cond, 0, len(t.conds)+len(t.fence))
	for _, cd := range t.conds {
		key := []byte(cd.ref.key)
		switch {
		case cd.after != nil:
			if in[cd.after] {
				continue
			}
			out = append(out, store.IfRevision(cd.ref.table, key, cd.after.rev))
		case cd.rev == revDirty:
			return nil, &store.ConflictError{Cond: store.IfRevision(cd.ref.table, key, cd.rev), Rev: cd.rev}
		case cd.rev == revUnknown:
			_, r, err := c.st.Get(ctx, cd.ref.table, key)
			if err != nil {
				return nil, err
			}
			if r > cd.bound {
				return nil, &store.ConflictError{Cond: store.IfRevision(cd.ref.table, key, cd.bound), Rev: r}
			}
			out = append(out, store.IfRevision(cd.ref.table, key, r))
		default:
			out = append(out, store.IfRevision(cd.ref.table, key, cd.rev))
		}
	}
	return append(out, t.fence...), nil
}

// finished records t's outcome in memory (runs on the committer, before
// t's waiters wake): on success the revision of every record written and
// the events delivered to watchers; on failure the records marked dirty
// and the events that were not written dropped.
func (f *Fleet) finished(t *ticket) {
	var again []keyRef
	f.mu.Lock()
	for _, k := range t.keys {
		if f.inflight[k.id()] == t {
			delete(f.inflight, k.id())
		}
	}
	if f.lastEventTicket == t {
		f.lastEventTicket = nil
	}
	if t.err == nil {
		for _, op := range t.ops {
			if op.Value != nil {
				f.setRevLocked(op.Table, string(op.Key), t.rev, false)
			}
		}
		for _, k := range t.keys {
			if r, ok := f.skipped[k.id()]; ok {
				delete(f.skipped, k.id())
				if r > t.rev {
					// Another master wrote it after us while ours was in
					// flight: read it again.
					f.setRevLocked(k.table, k.key, revDirty, true)
					again = append(again, k)
				}
			}
		}
		for _, e := range t.events {
			f.deliverLocked(e)
		}
	} else {
		for _, k := range t.keys {
			delete(f.skipped, k.id())
			f.setRevLocked(k.table, k.key, revDirty, true)
		}
		for _, e := range t.events {
			f.dropEventLocked(e)
		}
	}
	f.mu.Unlock()
	if len(again) > 0 {
		go f.reconcile(context.Background(), again)
	}
}
