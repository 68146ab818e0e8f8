package fleet

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// followTables are the tables the fleet's memory follows.
var followTables = []string{store.TableAgents, store.TableNodes, store.TableEvents, store.TableMeta, store.TableRevoked}

// setRevLocked records rev as the store revision of the record table/key
// in memory (dirty: force it, even below the known one). The caller holds
// f.mu.
func (f *Fleet) setRevLocked(table, key string, rev store.Revision, force bool) {
	set := func(p *store.Revision) {
		if force || *p < rev {
			*p = rev
		}
	}
	switch table {
	case store.TableAgents:
		if a := f.agents[key]; a != nil {
			set(&a.rec.rev)
		}
	case store.TableNodes:
		if n := f.nodes[key]; n != nil {
			set(&n.rev)
		} else if n := f.orphans[key]; n != nil {
			set(&n.rev)
		}
	case store.TableMeta:
		if key == string(metaDefaultsKey) {
			set(&f.defaultsRev)
		}
	case store.TableRevoked:
		if r := f.revoked[key]; r != nil {
			set(&r.rev)
		}
	}
}

// knownRevLocked is the store revision memory holds record table/key at:
// -1 when dirty (any store value is newer), the load revision when
// unknown, 0 when absent.
func (f *Fleet) knownRevLocked(table, key string) store.Revision {
	var r store.Revision
	switch table {
	case store.TableAgents:
		if a := f.agents[key]; a != nil {
			r = a.rec.rev
		}
	case store.TableNodes:
		if n := f.nodes[key]; n != nil {
			r = n.rev
		} else if n := f.orphans[key]; n != nil {
			r = n.rev
		}
	case store.TableMeta:
		r = f.defaultsRev
	case store.TableRevoked:
		if rv := f.revoked[key]; rv != nil {
			r = rv.rev
		}
	}
	if r == revUnknown {
		return f.loadRev
	}
	return r
}

// deliverLocked hands a committed event to the local watchers, in sequence
// order: an event older than one already delivered is not sent again.
func (f *Fleet) deliverLocked(e Event) {
	if e.Seq <= f.deliveredSeq {
		return
	}
	f.deliveredSeq = e.Seq
	for s := range f.subs {
		select {
		case s.ch <- e:
		default:
			// The watcher fell behind: cut it off rather than block the fleet.
			delete(f.subs, s)
			close(s.ch)
		}
	}
}

func sameEvent(a, b Event) bool {
	return a.Seq == b.Seq && a.Time.Equal(b.Time) && a.Type == b.Type && a.AgentID == b.AgentID &&
		a.NodeID == b.NodeID && a.Message == b.Message && a.Actor == b.Actor
}

// dropEventLocked removes an event that was not written from the log.
func (f *Fleet) dropEventLocked(e Event) {
	i := sort.Search(len(f.events), func(i int) bool { return f.events[i].Seq >= e.Seq })
	if i < len(f.events) && f.events[i] == e {
		f.events = append(f.events[:i], f.events[i+1:]...)
	}
	f.lastSeq = max(f.deliveredSeq, 0)
	if n := len(f.events); n > 0 {
		f.lastSeq = max(f.lastSeq, f.events[n-1].Seq)
	}
}

// insertEventLocked puts a committed event of the store in the log, in
// sequence order, and delivers it.
func (f *Fleet) insertEventLocked(e Event, deliver bool) {
	i := sort.Search(len(f.events), func(i int) bool { return f.events[i].Seq >= e.Seq })
	switch {
	case i < len(f.events) && f.events[i].Seq == e.Seq:
		f.events[i] = e
	case i == 0 && len(f.events) >= f.opts.EventLogSize:
		return // older than every kept event
	default:
		f.events = append(f.events, Event{})
		copy(f.events[i+1:], f.events[i:])
		f.events[i] = e
		if over := len(f.events) - f.opts.EventLogSize; over > 0 {
			f.events = append([]Event(nil), f.events[over:]...)
		}
	}
	f.lastSeq = max(f.lastSeq, e.Seq)
	if deliver {
		f.deliverLocked(e)
	}
}

// reconcile reads the records keys from the store and applies them to
// memory, as the watch would.
func (f *Fleet) reconcile(ctx context.Context, keys []keyRef) {
	for _, k := range keys {
		v, rev, err := f.st.Get(ctx, k.table, []byte(k.key))
		if err != nil {
			f.log.Warn("read fleet record again", "table", k.table, "err", err)
			continue
		}
		f.mu.Lock()
		if err := f.applyLocked(store.Change{Table: k.table, Key: []byte(k.key), Value: v, Rev: rev}, false); err != nil {
			f.log.Warn("apply fleet record", "table", k.table, "err", err)
		}
		f.mu.Unlock()
	}
}

// applyLocked applies a change of the store to memory unless memory holds
// the record at that revision or later (this master's own write, or an
// old change), or this master has a write of it in flight (that write
// then fails on its condition, or the change is its echo). The caller
// holds f.mu.
//
// Events reach watchers only from the watch (fromWatch), which brings them
// in revision order, that is in sequence order: an event read by
// reconcile may be newer than others the watch has yet to bring.
func (f *Fleet) applyLocked(c store.Change, fromWatch bool) error {
	ref := keyRef{c.Table, string(c.Key)}
	if c.Table != store.TableEvents && f.inflight[ref.id()] != nil {
		f.skipped[ref.id()] = max(f.skipped[ref.id()], c.Rev)
		return nil
	}
	if c.Table == store.TableEvents {
		// An event is written once: another master's event under a
		// sequence number this master has a write in flight for is
		// committed (ours will fail), and takes its place at once, so
		// that watchers get it in order.
		if c.Deleted() {
			return nil // trimming: the local log is bounded on its own
		}
		var e Event
		if err := json.Unmarshal(c.Value, &e); err != nil {
			return fmt.Errorf("decode event %x: %w", c.Key, err)
		}
		if len(c.Key) != 8 || binary.BigEndian.Uint64(c.Key) != e.Seq {
			return fmt.Errorf("event %x holds seq %d", c.Key, e.Seq)
		}
		if fromWatch && f.inflight[ref.id()] != nil {
			i := sort.Search(len(f.events), func(i int) bool { return f.events[i].Seq >= e.Seq })
			if i < len(f.events) && sameEvent(f.events[i], e) {
				// Our own, committed: deliver it now, before the changes
				// of later revisions the watch brings next.
				f.deliverLocked(f.events[i])
				return nil
			}
		}
		f.insertEventLocked(e, fromWatch)
		return nil
	}
	known := f.knownRevLocked(c.Table, string(c.Key))
	if known >= 0 && c.Rev <= known {
		return nil
	}
	switch c.Table {
	case store.TableAgents:
		return f.applyAgentLocked(string(c.Key), c.Value, c.Rev)
	case store.TableNodes:
		return f.applyNodeLocked(string(c.Key), c.Value, c.Rev)
	case store.TableMeta:
		if string(c.Key) != string(metaDefaultsKey) {
			return nil
		}
		d := versionDefaults{StorageServerVersion: "latest"}
		if !c.Deleted() {
			if err := json.Unmarshal(c.Value, &d); err != nil {
				return fmt.Errorf("decode version defaults: %w", err)
			}
		}
		f.defaults, f.defaultsRev = d, c.Rev
	case store.TableRevoked:
		if c.Deleted() {
			delete(f.revoked, string(c.Key))
			return nil
		}
		var r Revocation
		if err := json.Unmarshal(c.Value, &r); err != nil {
			return fmt.Errorf("decode revocation %q: %w", c.Key, err)
		}
		if r.AgentID != string(c.Key) {
			return fmt.Errorf("decode revocation %q: it names agent %q", c.Key, r.AgentID)
		}
		r.rev = c.Rev
		f.revoked[r.AgentID] = &r
	}
	return nil
}

func (f *Fleet) applyAgentLocked(id string, v []byte, rev store.Revision) error {
	a := f.agents[id]
	if v == nil {
		if a != nil {
			for nid := range a.nodes {
				delete(f.nodes, nid)
			}
			delete(f.agents, id)
		}
		for nid, n := range f.orphans {
			if n.AgentID == id {
				delete(f.orphans, nid)
			}
		}
		return nil
	}
	var r agentRec
	if err := json.Unmarshal(v, &r); err != nil {
		return fmt.Errorf("decode agent %s: %w", id, err)
	}
	if r.ID != id {
		return fmt.Errorf("decode agent %s: it names agent %q", id, r.ID)
	}
	r.rev = rev
	if a == nil {
		a = &agentState{nodes: map[string]*Node{}}
		a.health, a.lastSeen = r.persistedHealth(), r.LastSeen
		f.agents[id] = a
		for nid, n := range f.orphans {
			if n.AgentID == id {
				delete(f.orphans, nid)
				f.nodes[nid], a.nodes[nid] = n, n
			}
		}
	} else if r.Master != f.self {
		// Another master tracks its liveness: show what it wrote.
		a.health, a.lastSeen = r.persistedHealth(), r.LastSeen
	} else {
		// This master tracks it in memory; the applied generation is
		// re-reported by every heartbeat and kept in memory only.
		r.AppliedGeneration = max(r.AppliedGeneration, a.rec.AppliedGeneration)
	}
	a.rec = r
	return nil
}

// persistedHealth is the health a master wrote last (offline if none).
func (r *agentRec) persistedHealth() Health {
	switch r.Health {
	case Healthy, Degraded:
		return r.Health
	}
	return Offline
}

func (f *Fleet) applyNodeLocked(id string, v []byte, rev store.Revision) error {
	old := f.nodes[id]
	if old == nil {
		old = f.orphans[id]
	}
	if old != nil {
		if a := f.agents[old.AgentID]; a != nil {
			delete(a.nodes, id)
		}
		delete(f.nodes, id)
		delete(f.orphans, id)
	}
	if v == nil {
		return nil
	}
	var n Node
	if err := json.Unmarshal(v, &n); err != nil {
		return fmt.Errorf("decode node %s: %w", id, err)
	}
	if n.ID != id {
		return fmt.Errorf("decode node %s: it names node %q", id, n.ID)
	}
	n.rev = rev
	if a := f.agents[n.AgentID]; a != nil {
		f.nodes[id], a.nodes[id] = &n, &n
	} else {
		// Its agent's record comes on another watch: hold it until then.
		f.orphans[id] = &n
	}
	return nil
}

// follower is the state of Follow, for CaughtUp.
type follower struct {
	mu      sync.Mutex
	chans   map[string]<-chan store.Change
	applied map[string]store.Revision
	inHand  atomic.Int64
}

// Follow keeps memory following the store until ctx is done: it watches
// every table the fleet reads from the revision it loaded at and applies
// other masters' changes (deletions included; an agent deleted takes its
// nodes along). If the store no longer keeps that history (ErrCompacted)
// it loads the tables again, keeping the liveness this master tracks, and
// watches from there. New events of other masters reach Watch's
// followers in sequence order. Run calls it when the fleet shares its
// store with other masters (a Coordinator other than cluster.Single).
func (f *Fleet) Follow(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := f.followOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, store.ErrCompacted) {
			f.log.Warn("fleet follow: history compacted, loading the fleet again", "err", err)
			if err = f.reload(ctx); err == nil {
				backoff = 100 * time.Millisecond
				continue
			}
		}
		f.log.Error("fleet follow", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (f *Fleet) followOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.mu.RLock()
	from := f.loadRev + 1
	f.mu.RUnlock()
	fl := &f.fol
	fl.mu.Lock()
	fl.chans, fl.applied = map[string]<-chan store.Change{}, map[string]store.Revision{}
	fl.mu.Unlock()
	errc := make(chan error, len(followTables))
	for _, table := range followTables {
		go func() { errc <- f.followTable(ctx, table, from) }()
	}
	err := <-errc
	cancel()
	for range len(followTables) - 1 {
		<-errc
	}
	return err
}

func (f *Fleet) followTable(ctx context.Context, table string, from store.Revision) error {
	fl := &f.fol
	for {
		ch, err := f.st.Watch(ctx, table, from)
		if err != nil {
			return fmt.Errorf("watch %s from %d: %w", table, from, err)
		}
		fl.mu.Lock()
		fl.chans[table] = ch
		fl.mu.Unlock()
		for c := range ch {
			fl.inHand.Add(1)
			f.mu.Lock()
			if err := f.applyLocked(c, true); err != nil {
				f.log.Warn("fleet follow: change not applied", "table", table, "rev", c.Rev, "err", err)
			}
			f.mu.Unlock()
			from = c.Rev + 1
			fl.mu.Lock()
			fl.applied[table] = c.Rev
			fl.mu.Unlock()
			fl.inHand.Add(-1)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Fell behind or the store closed: resume where it stopped.
	}
}

// CaughtUp waits until memory follows the store up to revision rev: every
// change committed at rev or before that the store handed to Follow is
// applied. (Exact for the bbolt backend, which hands changes over before
// ApplyIf returns; for tests and status.)
func (f *Fleet) CaughtUp(ctx context.Context, rev store.Revision) error {
	fl := &f.fol
	quiet := 0
	for {
		fl.mu.Lock()
		ok := len(fl.chans) == len(followTables)
		for _, table := range followTables {
			if !ok {
				break
			}
			if fl.applied[table] < rev && len(fl.chans[table]) > 0 {
				ok = false
			}
		}
		fl.mu.Unlock()
		if ok && fl.inHand.Load() == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= 3 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// reload loads the fleet's tables again (after the history Follow needs
// was compacted), keeping the liveness this master tracks and the
// records it has writes in flight for.
func (f *Fleet) reload(ctx context.Context) error {
	g := &Fleet{opts: f.opts, clock: f.clock, log: f.log, st: f.st, coord: f.coord, self: f.self, started: f.started}
	g.initMaps()
	if err := g.load(ctx, false); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, a := range g.agents {
		if old := f.agents[id]; old != nil && a.rec.Master == f.self {
			a.health, a.lastSeen = old.health, old.lastSeen
			a.rec.AppliedGeneration = max(a.rec.AppliedGeneration, old.rec.AppliedGeneration)
		}
		if old := f.agents[id]; old != nil && f.inflight[keyRef{store.TableAgents, id}.id()] != nil {
			a.rec = old.rec
		}
	}
	f.agents, f.nodes, f.orphans = g.agents, g.nodes, g.orphans
	f.defaults, f.defaultsRev = g.defaults, g.defaultsRev
	f.revoked = g.revoked
	for _, e := range g.events {
		if e.Seq > f.lastSeq || len(f.events) == 0 || e.Seq >= f.events[0].Seq {
			f.insertEventLocked(e, true)
		}
	}
	f.loadRev = g.loadRev
	// A record with a write in flight was just replaced by the store's
	// value: read it again once that write finishes.
	for id := range f.inflight {
		f.skipped[id] = math.MaxInt64
	}
	return nil
}
