package metrics

import (
	"context"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// timedStore is a store.Store that times every transaction into
// sutra_store_transaction_seconds{op}.
type timedStore struct {
	store.Store
	m *Metrics
}

// Store wraps st so that its transactions are timed; the backend is not
// touched (Watch and Close pass through).
func (m *Metrics) Store(st store.Store) store.Store { return &timedStore{Store: st, m: m} }

func (t *timedStore) since(op string, start time.Time) {
	t.m.storeTxn.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (t *timedStore) Apply(ctx context.Context, ops []store.Op) error {
	defer t.since("apply", time.Now())
	err := t.Store.Apply(ctx, ops)
	if err == nil {
		t.m.events.count(ops)
	}
	return err
}

func (t *timedStore) ApplyIf(ctx context.Context, conds []store.Cond, ops []store.Op) (store.Revision, error) {
	defer t.since("apply_if", time.Now())
	rev, err := t.Store.ApplyIf(ctx, conds, ops)
	if err == nil {
		t.m.events.count(ops)
	}
	return rev, err
}

func (t *timedStore) Get(ctx context.Context, table string, key []byte) ([]byte, store.Revision, error) {
	defer t.since("get", time.Now())
	return t.Store.Get(ctx, table, key)
}

func (t *timedStore) Scan(ctx context.Context, table string, fn func(key, value []byte) error) error {
	defer t.since("scan", time.Now())
	return t.Store.Scan(ctx, table, fn)
}
