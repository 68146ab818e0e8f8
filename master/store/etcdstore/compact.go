package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sutragrid/sutra/master/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Compaction defaults of RunCompactor.
const (
	// DefaultCompactKeep is how many recent revisions the compactor
	// keeps, well above store.MinWatchHistory.
	DefaultCompactKeep = 10000
	// DefaultCompactEvery is how often the leader compacts.
	DefaultCompactEvery = 5 * time.Minute
)

// CompactOnce compacts etcd's history to the current revision minus keep,
// when that is past the last compaction this store made (a compaction
// someone else made already is fine). keep is at least
// store.MinWatchHistory, so watchers can still resume. Compaction is of
// the whole etcd keyspace, not just the prefix.
func (s *Store) CompactOnce(ctx context.Context, keep int64) error {
	if keep < store.MinWatchHistory {
		return fmt.Errorf("etcd compaction: keep %d revisions, at least %d", keep, store.MinWatchHistory)
	}
	cur, err := s.Revision(ctx)
	if err != nil {
		return fmt.Errorf("etcd compaction: %w", err)
	}
	target := int64(cur) - keep
	if target <= 0 || target <= s.lastCompact.Load() {
		return nil
	}
	rctx, cancel, err := s.begin(ctx)
	if err != nil {
		return fmt.Errorf("etcd compaction: %w", err)
	}
	defer cancel()
	if _, err := s.cli.Compact(rctx, target); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return s.wrap(rctx, fmt.Sprintf("etcd compaction to revision %d", target), err)
	}
	s.lastCompact.Store(target)
	s.log.Info("etcd store: compacted", "revision", target, "current", int64(cur), "keep", keep)
	return nil
}

// RunCompactor calls CompactOnce every interval until ctx ends (the leader
// runs it); failures are logged and retried at the next tick.
func (s *Store) RunCompactor(ctx context.Context, every time.Duration, keep int64) {
	if every <= 0 {
		every = DefaultCompactEvery
	}
	if keep <= 0 {
		keep = DefaultCompactKeep
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.CompactOnce(ctx, keep); err != nil && ctx.Err() == nil {
			s.log.Warn("etcd store: compaction failed", "err", err)
			if errors.Is(err, store.ErrClosed) {
				return
			}
		}
	}
}
