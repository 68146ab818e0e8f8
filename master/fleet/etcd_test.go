package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// Two masters, each with its own etcd client, on one real etcd: every
// acknowledged change survives their concurrent writes, with the
// committer's batches bounded by etcd's --max-txn-ops.
func TestNoLostUpdateOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.Start(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "/sutra-fleet-" + hex.EncodeToString(b) + "/"
	open := func() *etcdstore.Store {
		s, err := etcdstore.Open(context.Background(), etcdstore.Options{Endpoints: c.Endpoints(), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	stA, stB := open(), open()
	ca, cb := &conflictCounter{Store: stA}, &conflictCounter{Store: stB}
	p := &pair{t: t, st: ca, stB: cb, approx: true, clock: newFakeClock(), live: &liveSet{alive: map[string]bool{"A": true, "B": true}, leader: "B"}}
	testNoLostUpdatePair(t, p, Options{MaxBatchOps: stA.MaxTxnOps()})
	ca.mu.Lock()
	cb.mu.Lock()
	defer ca.mu.Unlock()
	defer cb.mu.Unlock()
	t.Logf("commits lost on a condition: A %d of %d, B %d of %d", ca.conflicts, ca.commits, cb.conflicts, cb.commits)
}
