package etcdstore_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The faults lossyKV injects into the next transaction's commit, over a
// real etcd: what a client sees when the member or leader it wrote
// through dies at the wrong moment.
const (
	deliver    int32 = iota // no fault
	loseAnswer              // the write is applied, its answer is lost (Unavailable)
	swallow                 // the write is never applied and never answered
	loseTwice               // applied, answer lost; the resend's answer lost too
)

// lossyKV is a fault injector on a real etcd client's KV, named as such:
// everything reaches the real etcd except what the armed fault drops.
type lossyKV struct {
	clientv3.KV
	fault   atomic.Int32
	commits atomic.Int32
}

func (k *lossyKV) Txn(ctx context.Context) clientv3.Txn {
	return &lossyTxn{Txn: k.KV.Txn(ctx), ctx: ctx, kv: k}
}

type lossyTxn struct {
	clientv3.Txn
	ctx context.Context
	kv  *lossyKV
}

func (t *lossyTxn) If(c ...clientv3.Cmp) clientv3.Txn  { t.Txn = t.Txn.If(c...); return t }
func (t *lossyTxn) Then(o ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(o...); return t }
func (t *lossyTxn) Else(o ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(o...); return t }

func (t *lossyTxn) Commit() (*clientv3.TxnResponse, error) {
	t.kv.commits.Add(1)
	switch t.kv.fault.Load() {
	case loseAnswer:
		t.kv.fault.Store(deliver)
		_, _ = t.Txn.Commit()
		return nil, status.Error(codes.Unavailable, "injected: connection lost after the write was sent")
	case loseTwice:
		t.kv.fault.Store(loseAnswer)
		_, _ = t.Txn.Commit()
		return nil, status.Error(codes.Unavailable, "injected: connection lost after the write was sent")
	case swallow:
		t.kv.fault.Store(deliver)
		<-t.ctx.Done()
		return nil, t.ctx.Err()
	}
	return t.Txn.Commit()
}

// TestUnansweredWrites: a conditional write whose answer was lost is sent
// again; when its first attempt had been applied the resend's broken
// condition is recognised as that write, not a conflict; a write a dying
// leader swallowed is resent after one attempt's timeout, not at the end
// of the call's; a real conflict stays a conflict.
func TestUnansweredWrites(t *testing.T) {
	t.Parallel() // its own etcd
	c := etcdtest.Start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	kv := &lossyKV{KV: cli.KV}
	cli.KV = kv
	ctx := context.Background()
	s := open(t, etcdstore.Options{Client: cli, Prefix: randomPrefix(t), RequestTimeout: 6 * time.Second})
	key := []byte("k")
	put := func(v string) (store.Revision, error) {
		_, rev, err := s.Get(ctx, store.TableMeta, key)
		if err != nil {
			t.Fatal(err)
		}
		return s.ApplyIf(ctx, []store.Cond{{Table: store.TableMeta, Key: key, Rev: rev}}, []store.Op{store.Put(store.TableMeta, key, []byte(v))})
	}
	check := func(want string, wantRev store.Revision) {
		t.Helper()
		v, rev, err := s.Get(ctx, store.TableMeta, key)
		if err != nil || string(v) != want || rev != wantRev {
			t.Fatalf("Get = %q at %d, %v; want %q at %d", v, rev, err, want, wantRev)
		}
	}
	if _, err := put("v0"); err != nil {
		t.Fatal(err)
	}

	for _, f := range []struct {
		name  string
		fault int32
		sends int32
	}{{"applied, answer lost", loseAnswer, 2}, {"applied, answer lost twice", loseTwice, 3}} {
		kv.fault.Store(f.fault)
		kv.commits.Store(0)
		rev, err := put(f.name)
		if err != nil {
			t.Fatalf("%s: ApplyIf = %v, want success (the first attempt was applied)", f.name, err)
		}
		if n := kv.commits.Load(); n != f.sends+1 { // and the read that finds it applied
			t.Errorf("%s: %d commits, want %d sends and one read", f.name, n, f.sends)
		}
		check(f.name, rev)
	}

	kv.fault.Store(swallow)
	kv.commits.Store(0)
	start := time.Now()
	rev, err := put("swallowed")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("swallowed: ApplyIf = %v, want success on the resend", err)
	}
	if took > 4*time.Second { // one attempt's timeout is a third of the call's 6 s
		t.Errorf("swallowed: took %s, want the resend after one attempt's timeout (2 s)", took)
	}
	check("swallowed", rev)

	// A real conflict: the condition is on a revision another writer
	// replaced, with a different value; losing the answer does not turn
	// it into a success.
	_, old, _ := s.Get(ctx, store.TableMeta, key)
	if _, err := put("other writer"); err != nil {
		t.Fatal(err)
	}
	kv.fault.Store(loseAnswer)
	_, err = s.ApplyIf(ctx, []store.Cond{{Table: store.TableMeta, Key: key, Rev: old}}, []store.Op{store.Put(store.TableMeta, key, []byte("stale"))})
	var ce *store.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("stale condition with a lost answer: ApplyIf = %v, want a conflict", err)
	}
	if v, _, _ := s.Get(ctx, store.TableMeta, key); string(v) != "other writer" {
		t.Fatalf("value = %q after a refused stale write, want the other writer's", v)
	}
}
