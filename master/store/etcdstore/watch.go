package etcdstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/sutragrid/sutra/master/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchBuffer is how many changes a watcher may fall behind before its
// channel is closed (it resumes with Watch(last.Rev+1)).
const watchBuffer = 1024

// Watch implements store.Store on an etcd watch of the table's prefix
// from revision from (0: changes after the call). A revision etcd has
// compacted is store.ErrCompacted from Watch itself; when a compaction
// overtakes a watch after it started, or the watcher falls watchBuffer
// changes behind, or the etcd member it talks to loses its leader, the
// channel closes: resume with Watch(last.Rev+1), which says ErrCompacted
// if that revision is gone. Watch returns once etcd has created the
// watch, so every change committed after it returns is delivered.
func (s *Store) Watch(ctx context.Context, table string, from store.Revision) (<-chan store.Change, error) {
	if err := checkTable(table); err != nil {
		return nil, fmt.Errorf("store watch: %w", err)
	}
	if from < 0 {
		return nil, fmt.Errorf("store watch %s: %w: negative revision %d", table, store.ErrInvalidOp, from)
	}
	rctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("store watch %s: %w", table, err)
	}
	defer cancel()
	tp := TablePrefix(s.prefix, table)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCreatedNotify()}
	if from > 0 {
		// A read at from fails exactly when a watch from it would be
		// compacted (both: from < etcd's compact revision).
		_, err := s.cli.Get(rctx, s.prefix, clientv3.WithRev(int64(from)), clientv3.WithCountOnly())
		switch {
		case err == nil, errors.Is(err, rpctypes.ErrFutureRev):
		default:
			return nil, s.wrap(rctx, fmt.Sprintf("store watch %s from revision %d", table, from), err)
		}
		opts = append(opts, clientv3.WithRev(int64(from)))
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("store watch %s: %w", table, store.ErrClosed)
	}
	s.watchers.Add(1)
	s.mu.Unlock()
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	stop := context.AfterFunc(s.root, wcancel)
	wch := s.cli.Watch(wctx, tp, opts...)
	end := func() {
		stop()
		wcancel()
		go func() { // the client closes wch after the cancel; don't wait for it
			for range wch {
			}
		}()
		s.watchers.Done()
	}

	// Wait for etcd to create the watch.
	select {
	case resp, ok := <-wch:
		var err error
		switch {
		case !ok:
			err = s.wrap(rctx, "store watch "+table, errors.Join(wctx.Err(), errors.New("watch ended before it started")))
			if wctx.Err() == nil {
				err = fmt.Errorf("store watch %s: etcd at %s ended the watch before it started", table, s.endpoints)
			}
		case resp.CompactRevision != 0:
			err = fmt.Errorf("store watch %s from revision %d: %w (etcd keeps revisions from %d)", table, from, store.ErrCompacted, resp.CompactRevision)
		case resp.Err() != nil:
			err = s.wrap(rctx, "store watch "+table, resp.Err())
		case !resp.Created:
			err = fmt.Errorf("store watch %s: etcd at %s answered a new watch with events before creating it", table, s.endpoints)
		}
		if err != nil {
			end()
			return nil, err
		}
	case <-rctx.Done():
		end()
		return nil, s.wrap(rctx, "store watch "+table, rctx.Err())
	}

	out := make(chan store.Change, max(watchBuffer, s.maxOps))
	go func() {
		defer close(out)
		defer end()
		for {
			var resp clientv3.WatchResponse
			var ok bool
			select {
			case <-wctx.Done(): // the caller's ctx or Close, whatever the client does
				return
			case resp, ok = <-wch:
			}
			if !ok {
				return
			}
			if resp.CompactRevision != 0 || resp.Canceled || resp.Err() != nil {
				s.log.Info("etcd store: watch ended", "table", table, "compact_revision", resp.CompactRevision, "err", resp.Err())
				return
			}
			evs := resp.Events
			for len(evs) > 0 {
				// One revision at a time, whole or not at all, so that a
				// watcher closed for falling behind resumes at last.Rev+1
				// without missing the rest of a batch.
				n := 1
				for n < len(evs) && evs[n].Kv.ModRevision == evs[0].Kv.ModRevision {
					n++
				}
				if cap(out)-len(out) < n {
					s.log.Info("etcd store: watcher fell behind, closing its watch", "table", table, "buffer", cap(out), "rev", evs[0].Kv.ModRevision)
					return
				}
				for _, ev := range evs[:n] {
					c := store.Change{Table: table, Key: ev.Kv.Key[len(tp):], Rev: store.Revision(ev.Kv.ModRevision)}
					if ev.Type == mvccpb.PUT {
						c.Value = value(ev.Kv.Value)
					}
					out <- c // room checked above; only this goroutine sends
				}
				evs = evs[n:]
			}
		}
	}()
	return out, nil
}
