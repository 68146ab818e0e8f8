package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The bbolt backend's revisions live in the internal bucket: revKey holds
// the store's revision (8 bytes, big endian) and the bucket revsBucket holds
// one bucket per table mapping each key to the revision of its last write.
// A database written before revisions were kept has neither: its revision
// is baseRevision, as is that of every key it holds.
var (
	revKey     = []byte("rev")
	revsBucket = []byte("revs")
)

const baseRevision Revision = 1

// Watch tuning of the bbolt backend.
const (
	// watchBuffer is how many changes a watcher may fall behind before
	// its channel is closed.
	watchBuffer = 256
	// maxHistoryBytes bounds the memory of the replayable changes beyond
	// MinWatchHistory of them.
	maxHistoryBytes = 64 << 20
)

// revState serializes commits with their publication to watchers, so that
// watchers see revisions in order.
type revState struct {
	wmu     sync.Mutex // held across a write transaction and its publication
	hubOnce sync.Once
	hub     *watchHub
}

func encodeRev(r Revision) []byte { return binary.BigEndian.AppendUint64(nil, uint64(r)) }

func decodeRev(b []byte) Revision {
	if len(b) != 8 {
		return baseRevision
	}
	return Revision(binary.BigEndian.Uint64(b))
}

// storeRev is the store's revision in tx.
func storeRev(tx *bolt.Tx) Revision {
	in := tx.Bucket(internalBucket)
	if in == nil {
		return baseRevision
	}
	if v := in.Get(revKey); v != nil {
		return decodeRev(v)
	}
	return baseRevision
}

// keyRev is the revision of table/key in tx, 0 when absent.
func keyRev(tx *bolt.Tx, table string, key []byte) Revision {
	bk := tx.Bucket([]byte(table))
	if bk == nil || bk.Get(key) == nil {
		return 0
	}
	if in := tx.Bucket(internalBucket); in != nil {
		if rb := in.Bucket(revsBucket); rb != nil {
			if tb := rb.Bucket([]byte(table)); tb != nil {
				if v := tb.Get(key); v != nil {
					return decodeRev(v)
				}
			}
		}
	}
	return baseRevision
}

// watchers returns the hub, created at the revision of its first use.
func (b *Bolt) watchers() *watchHub {
	b.rs.hubOnce.Do(func() {
		b.rs.wmu.Lock()
		defer b.rs.wmu.Unlock()
		// A damaged file fails the caller's own read or write; the hub
		// starts at the base revision then.
		rev, err := b.Revision(context.Background())
		if err != nil {
			rev = baseRevision
		}
		b.rs.hub = &watchHub{start: rev, cur: rev, subs: map[*watcher]struct{}{}}
	})
	return b.rs.hub
}

// commit writes ops in one bbolt transaction if every cond holds, and
// publishes the changes to watchers once the transaction is durable.
func (b *Bolt) commit(ctx context.Context, conds []Cond, ops []Op) (rev Revision, err error) {
	for _, op := range ops {
		if err := ValidateOp(op); err != nil {
			return 0, fmt.Errorf("store apply: %w", err)
		}
	}
	for _, c := range conds {
		if err := ValidateOp(Op{Table: c.Table, Key: c.Key}); err != nil {
			return 0, fmt.Errorf("store apply: condition: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	h := b.watchers()
	defer b.protect(&err, debug.SetPanicOnFault(true))
	if len(ops) == 0 {
		err = b.db.View(func(tx *bolt.Tx) error {
			rev = storeRev(tx)
			return checkConds(tx, conds)
		})
		return rev, closedErr("store apply", err)
	}
	b.rs.wmu.Lock()
	defer b.rs.wmu.Unlock()
	if h.isClosed() {
		return 0, fmt.Errorf("store apply: %w", ErrClosed)
	}
	var txid uint64
	var changes []Change
	err = b.db.Update(func(tx *bolt.Tx) error {
		if err := checkConds(tx, conds); err != nil {
			return err
		}
		in := tx.Bucket(internalBucket)
		rev = storeRev(tx) + 1
		if err := in.Put(revKey, encodeRev(rev)); err != nil {
			return err
		}
		revs, err := in.CreateBucketIfNotExists(revsBucket)
		if err != nil {
			return err
		}
		encRev := encodeRev(rev)
		type touched struct {
			idx     int // in changes; -1: none yet
			existed bool
		}
		seen := map[string]*touched{}
		tableRevs := map[string]*bolt.Bucket{}
		for _, op := range ops {
			bk := tx.Bucket([]byte(op.Table))
			if bk == nil {
				return fmt.Errorf("%w %q", ErrUnknownTable, op.Table)
			}
			tb := tableRevs[op.Table]
			if tb == nil {
				if tb, err = revs.CreateBucketIfNotExists([]byte(op.Table)); err != nil {
					return err
				}
				tableRevs[op.Table] = tb
			}
			id := op.Table + "\x00" + string(op.Key)
			t := seen[id]
			if t == nil {
				t = &touched{idx: -1, existed: bk.Get(op.Key) != nil}
				seen[id] = t
			}
			if op.Value == nil {
				if err := bk.Delete(op.Key); err != nil {
					return fmt.Errorf("delete %s/%s: %w", op.Table, op.Key, err)
				}
				if err := tb.Delete(op.Key); err != nil {
					return err
				}
			} else {
				if err := bk.Put(op.Key, op.Value); err != nil {
					return fmt.Errorf("put %s/%s: %w", op.Table, op.Key, err)
				}
				if err := tb.Put(op.Key, encRev); err != nil {
					return err
				}
			}
			if op.Value == nil && !t.existed && t.idx < 0 {
				continue // deleting an absent key changes nothing
			}
			c := Change{Table: op.Table, Key: append([]byte(nil), op.Key...), Rev: rev}
			if op.Value != nil {
				c.Value = append([]byte{}, op.Value...)
			}
			if t.idx < 0 {
				t.idx = len(changes)
				changes = append(changes, c)
			} else {
				changes[t.idx] = c
			}
		}
		// A key put and deleted again in one batch, absent before, did not change.
		kept := changes[:0]
		for _, c := range changes {
			if c.Value == nil && !seen[c.Table+"\x00"+string(c.Key)].existed {
				continue
			}
			kept = append(kept, c)
		}
		changes = kept
		txid = uint64(tx.ID())
		return nil
	})
	if err != nil {
		return 0, closedErr("store apply", err)
	}
	b.maybeMark(txid)
	h.publish(rev, changes)
	return rev, nil
}

// checkConds returns a *ConflictError for the first cond that does not hold.
func checkConds(tx *bolt.Tx, conds []Cond) error {
	for _, c := range conds {
		if r := keyRev(tx, c.Table, c.Key); r != c.Rev {
			return &ConflictError{Cond: Cond{Table: c.Table, Key: append([]byte(nil), c.Key...), Rev: c.Rev}, Rev: r}
		}
	}
	return nil
}

// closedErr names a closed database ErrClosed, and wraps err in what.
func closedErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("%s: %w", what, ErrClosed)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ApplyIf implements Store.
func (b *Bolt) ApplyIf(ctx context.Context, conds []Cond, ops []Op) (Revision, error) {
	return b.commit(ctx, conds, ops)
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, table string, key []byte) (value []byte, rev Revision, err error) {
	if err := ValidateOp(Op{Table: table, Key: key}); err != nil {
		return nil, 0, fmt.Errorf("store get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	defer b.protect(&err, debug.SetPanicOnFault(true))
	err = b.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(table)).Get(key); v != nil {
			value = append([]byte{}, v...)
			rev = keyRev(tx, table, key)
		}
		return nil
	})
	return value, rev, closedErr("store get", err)
}

// Revision implements Store.
func (b *Bolt) Revision(ctx context.Context) (rev Revision, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	defer b.protect(&err, debug.SetPanicOnFault(true))
	err = b.db.View(func(tx *bolt.Tx) error { rev = storeRev(tx); return nil })
	return rev, closedErr("store revision", err)
}

// Watch implements Store: changes are published in process after each
// commit, and replayed from memory for revisions since the store was
// opened (at least MinWatchHistory changes, up to maxHistoryBytes beyond).
func (b *Bolt) Watch(ctx context.Context, table string, from Revision) (<-chan Change, error) {
	if !knownTable(table) {
		return nil, fmt.Errorf("store watch: %w %q", ErrUnknownTable, table)
	}
	if from < 0 {
		return nil, fmt.Errorf("store watch: %w: negative revision %d", ErrInvalidOp, from)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.watchers().watch(ctx, table, from)
}

// closeWatchers ends every watch, and every later one; Close calls it.
func (b *Bolt) closeWatchers() {
	b.rs.hubOnce.Do(func() { b.rs.hub = &watchHub{subs: map[*watcher]struct{}{}} })
	b.rs.hub.close()
}

// watchHub fans committed changes out to watchers and keeps the recent
// ones for replay.
type watchHub struct {
	mu        sync.Mutex
	start     Revision // hist holds every change after start
	cur       Revision
	hist      []Change
	histBytes int
	subs      map[*watcher]struct{}
	closed    bool
}

type watcher struct {
	table string
	from  Revision // changes before from are not for this watcher
	ch    chan Change
	stop  chan struct{}
}

func (h *watchHub) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

func (h *watchHub) watch(ctx context.Context, table string, from Revision) (<-chan Change, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("store watch: %w", ErrClosed)
	}
	if from == 0 {
		from = h.cur + 1
	}
	if from <= h.start {
		return nil, fmt.Errorf("store watch %s from revision %d: %w (changes after %d are kept)", table, from, ErrCompacted, h.start)
	}
	var replay []Change
	for _, c := range h.hist {
		if c.Rev >= from && c.Table == table {
			replay = append(replay, c)
		}
	}
	w := &watcher{table: table, from: from, ch: make(chan Change, len(replay)+watchBuffer), stop: make(chan struct{})}
	for _, c := range replay {
		w.ch <- c
	}
	h.subs[w] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
			h.mu.Lock()
			h.drop(w)
			h.mu.Unlock()
		case <-w.stop:
		}
	}()
	return w.ch, nil
}

// drop ends w; h.mu is held.
func (h *watchHub) drop(w *watcher) {
	if _, ok := h.subs[w]; !ok {
		return
	}
	delete(h.subs, w)
	close(w.ch)
	close(w.stop)
}

// publish records the changes of revision rev and hands them to the
// watchers without blocking: a watcher whose buffer is full is dropped.
func (h *watchHub) publish(rev Revision, changes []Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = rev
	for _, c := range changes {
		h.hist = append(h.hist, c)
		h.histBytes += len(c.Key) + len(c.Value)
	}
	if len(h.hist) > 2*MinWatchHistory || h.histBytes > maxHistoryBytes {
		n := 0
		for len(h.hist)-n > MinWatchHistory || (h.histBytes > maxHistoryBytes/2 && n < len(h.hist)) {
			h.histBytes -= len(h.hist[n].Key) + len(h.hist[n].Value)
			h.start = h.hist[n].Rev
			n++
		}
		h.hist = append([]Change(nil), h.hist[n:]...)
	}
	for w := range h.subs {
		for _, c := range changes {
			if c.Table != w.table || c.Rev < w.from {
				continue
			}
			select {
			case w.ch <- c:
			default:
				h.drop(w) // fell behind: it resumes with Watch(last.Rev+1)
			}
			if _, ok := h.subs[w]; !ok {
				break
			}
		}
	}
}

func (h *watchHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.subs {
		h.drop(w)
	}
}
