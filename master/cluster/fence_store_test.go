package cluster

import (
	"context"
	"errors"
	"testing"

	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// checkStoreFence shows the fence through the store: the etcd backend's
// ApplyIf with the deposed leader's conds is a conflict, the new leader's
// commits.
func checkStoreFence(t *testing.T, endpoints []string, stale, current []store.Cond) {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), etcdstore.Options{Client: newClient(t, endpoints), Prefix: testPrefix})
	if err != nil {
		t.Fatalf("etcdstore.Open: %v", err)
	}
	defer s.Close()
	op := []store.Op{store.Put(store.TableAgents, []byte("fenced"), []byte("x"))}
	if _, err := s.ApplyIf(context.Background(), stale, op); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ApplyIf(deposed leader's fence) = %v, want ErrConflict", err)
	}
	if _, err := s.ApplyIf(context.Background(), current, op); err != nil {
		t.Errorf("ApplyIf(new leader's fence) = %v", err)
	}
}
