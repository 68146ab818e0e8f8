package fleet

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/store"
)

// emit appends an event to the log (memory and store batch); watchers get
// it once it is committed. Its sequence number is the next after the
// highest known, written only if absent: two masters choosing the same
// number conflict, and the loser reads the other's event and tries again.
// Trimming the persisted log deletes blindly (idempotent). The caller
// holds f.mu.
func (f *Fleet) emit(tx *txn, now time.Time, typ, agentID, nodeID, msg string) {
	f.lastSeq++
	e := Event{Seq: f.lastSeq, Time: now, Type: typ, AgentID: agentID, NodeID: nodeID, Message: msg, Actor: tx.by()}
	tx.put(store.TableEvents, seqKey(e.Seq), e, 0)
	tx.events = append(tx.events, e)
	f.events = append(f.events, e)
	if over := len(f.events) - f.opts.EventLogSize; over > 0 {
		for _, old := range f.events[:over] {
			tx.ops = append(tx.ops, store.Delete(store.TableEvents, seqKey(old.Seq)))
		}
		// Copy now and then so the backing array does not grow without bound.
		if cap(f.events) > 2*f.opts.EventLogSize {
			f.events = append(make([]Event, 0, f.opts.EventLogSize+1), f.events[over:]...)
		} else {
			f.events = f.events[over:]
		}
	}
}

// Record appends an event that happened outside the fleet's own state
// (an enrollment, a join token change) to the persisted log, and returns
// once it is committed. typ is one of the Event… constants; msg is bounded
// like every event message.
func (f *Fleet) Record(ctx context.Context, typ, agentID, msg string) error {
	if typ == "" {
		return newErr(KindInvalid, "event type is empty")
	}
	const maxMsg = 1024
	if len(msg) > maxMsg {
		msg = strings.ToValidUTF8(msg[:maxMsg], "") // proto strings must be UTF-8
	}
	return f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		tx := txn{actor: actor.From(ctx)}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.emit(&tx, now, typ, agentID, "", msg)
		return f.enqueue(&tx), nil
	})
}

// Events returns up to limit events with Seq > since, oldest first
// (limit <= 0: all that are kept).
func (f *Fleet) Events(since uint64, limit int) []Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.eventsLocked(since, limit)
}

// LastSeq is the sequence number of the newest event (0: none yet).
func (f *Fleet) LastSeq() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lastSeq
}

func (f *Fleet) eventsLocked(since uint64, limit int) []Event {
	i := sort.Search(len(f.events), func(i int) bool { return f.events[i].Seq > since })
	out := f.events[i:]
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return append([]Event{}, out...)
}

// WatchOptions select what Watch streams.
type WatchOptions struct {
	// Since replays kept events with Seq > Since first.
	Since uint64
	// Tail, when Since is 0, replays the last Tail events first.
	Tail int
	// Follow streams new events after the replay until ctx is done.
	Follow bool
	// Buffer is how many events may queue for a slow watcher before it is
	// cut off with ErrWatcherBehind (default 4096).
	Buffer int
	// Internal marks a watcher of the master's own (the rollout
	// controller): it does not take one of the Options.MaxWatchers places
	// that clients share.
	Internal bool
}

// ErrWatcherBehind ends a Watch whose consumer could not keep up.
var ErrWatcherBehind = &Error{Kind: KindExhausted, Msg: "the event watcher fell behind and was cut off: watch again from the last sequence number received"}

type subscriber struct {
	ch       chan Event
	internal bool
}

// clientWatchersLocked counts the followers that are not the master's own.
func (f *Fleet) clientWatchersLocked() int {
	n := 0
	for s := range f.subs {
		if !s.internal {
			n++
		}
	}
	return n
}

// Watch calls fn for the replayed events, then (with Follow) for each new
// event, in sequence order, until ctx is done (returns nil), fn fails
// (returns its error) or the watcher falls behind (ErrWatcherBehind). A
// follower beyond Options.MaxWatchers is refused with ErrExhausted.
func (f *Fleet) Watch(ctx context.Context, o WatchOptions, fn func(Event) error) error {
	if o.Buffer <= 0 {
		o.Buffer = 4096
	}
	f.mu.Lock()
	var replay []Event
	switch {
	case o.Since > 0:
		replay = f.eventsLocked(o.Since, 0)
	case o.Tail > 0:
		n := min(o.Tail, len(f.events))
		replay = append([]Event(nil), f.events[len(f.events)-n:]...)
	}
	// Events not committed yet reach the follower when they are.
	for len(replay) > 0 && replay[len(replay)-1].Seq > f.deliveredSeq {
		replay = replay[:len(replay)-1]
	}
	var sub *subscriber
	if o.Follow {
		if n := f.clientWatchersLocked(); !o.Internal && n >= f.opts.MaxWatchers {
			f.mu.Unlock()
			return newErr(KindExhausted, "%d event watchers are already following, the master's limit: stop one (or raise --max-watchers, MAX_WATCHERS) and watch again", n)
		}
		sub = &subscriber{ch: make(chan Event, o.Buffer), internal: o.Internal}
		f.subs[sub] = struct{}{}
	}
	f.mu.Unlock()
	if sub != nil {
		defer func() {
			f.mu.Lock()
			if _, ok := f.subs[sub]; ok {
				delete(f.subs, sub)
				close(sub.ch)
			}
			f.mu.Unlock()
		}()
	}
	for _, e := range replay {
		if err := fn(e); err != nil {
			return err
		}
	}
	if sub == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-sub.ch:
			if !ok {
				return ErrWatcherBehind
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}
