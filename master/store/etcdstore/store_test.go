package etcdstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
	"github.com/sutragrid/sutra/master/store/storetest"
)

// randomPrefix gives each test its own keys in a shared etcd.
func randomPrefix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "/sutra-test-" + hex.EncodeToString(b) + "/"
}

func open(t *testing.T, o etcdstore.Options) *etcdstore.Store {
	t.Helper()
	s, err := etcdstore.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open(%v) = %v", o.Endpoints, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestContract runs the Store contract against a real etcd, each subtest
// on its own prefix.
func TestContract(t *testing.T) {
	t.Parallel() // its own etcd
	c := etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		o := etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t)}
		return func() (store.Store, error) { return etcdstore.Open(context.Background(), o) }
	})
}

// TestMaxTxnOps: a batch over the limit is ErrInvalidOp naming the limit
// and etcd's flag, and writes nothing; one at the limit commits.
func TestMaxTxnOps(t *testing.T) {
	t.Parallel() // its own etcd, with --max-txn-ops 1024
	c := etcdtest.Start(t)
	ctx := context.Background()
	for _, limit := range []int{0, 300} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t), MaxTxnOps: limit})
			want := limit
			if want == 0 {
				want = etcdstore.DefaultMaxTxnOps
			}
			if s.MaxTxnOps() != want {
				t.Fatalf("MaxTxnOps() = %d, want %d", s.MaxTxnOps(), want)
			}
			r0, _ := s.Revision(ctx)
			var ops []store.Op
			for i := range want + 1 {
				ops = append(ops, store.Put(store.TableAgents, fmt.Appendf(nil, "k%04d", i), []byte("v")))
			}
			err := s.Apply(ctx, ops)
			if !errors.Is(err, store.ErrInvalidOp) || !strings.Contains(err.Error(), "--max-txn-ops") || !strings.Contains(err.Error(), fmt.Sprint(want)) {
				t.Fatalf("Apply(%d distinct keys) = %v, want ErrInvalidOp naming %d and --max-txn-ops", len(ops), err, want)
			}
			if r, _ := s.Revision(ctx); r != r0 {
				t.Errorf("revision moved from %d to %d after a refused batch", r0, r)
			}
			n := 0
			_ = s.Scan(ctx, store.TableAgents, func(k, v []byte) error { n++; return nil })
			if n != 0 {
				t.Errorf("%d keys written by a refused batch", n)
			}
			// Ops on one key count once: the limit is on distinct keys.
			ops = append(ops[:want], store.Put(store.TableAgents, []byte("k0000"), []byte("again")))
			if err := s.Apply(ctx, ops); err != nil {
				t.Fatalf("Apply(%d ops on %d distinct keys) = %v", len(ops), want, err)
			}
			if v, _, _ := s.Get(ctx, store.TableAgents, []byte("k0000")); string(v) != "again" {
				t.Errorf("k0000 = %q, want the batch's last op: again", v)
			}
			// Too many conditions as well.
			conds := make([]store.Cond, want+1)
			for i := range conds {
				conds[i] = store.IfAbsent(store.TableNodes, fmt.Appendf(nil, "c%d", i))
			}
			if _, err := s.ApplyIf(ctx, conds, nil); !errors.Is(err, store.ErrInvalidOp) {
				t.Errorf("ApplyIf(%d conditions) = %v, want ErrInvalidOp", len(conds), err)
			}
		})
	}
	// A batch over etcd's request size is refused before it reaches etcd.
	s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t)})
	big := make([]byte, store.MaxValueSize)
	err := s.Apply(ctx, []store.Op{store.Put(store.TableAgents, []byte("a"), big), store.Put(store.TableAgents, []byte("b"), big)})
	if !errors.Is(err, store.ErrInvalidOp) {
		t.Errorf("Apply(2 MiB batch) = %v, want ErrInvalidOp", err)
	}
}

// TestConflictNamesCond: of several conditions the error names the first
// that failed, with the key's actual revision.
func TestConflictNamesCond(t *testing.T) {
	t.Parallel() // its own etcd
	c := etcdtest.Start(t)
	ctx := context.Background()
	s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t)})
	ra, err := s.ApplyIf(ctx, nil, []store.Op{store.Put(store.TableAgents, []byte("a"), []byte("1"))})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := s.ApplyIf(ctx, nil, []store.Op{store.Put(store.TableNodes, []byte("b"), []byte("1"))})
	if err != nil {
		t.Fatal(err)
	}
	conds := []store.Cond{
		store.IfRevision(store.TableAgents, []byte("a"), ra), // holds
		store.IfAbsent(store.TableNodes, []byte("b")),        // fails: at rb
		store.IfRevision(store.TableAgents, []byte("x"), 7),  // fails too: absent
	}
	_, err = s.ApplyIf(ctx, conds, []store.Op{store.Put(store.TableAgents, []byte("w"), []byte("no"))})
	var ce *store.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("ApplyIf(failing conditions) = %v, want a *store.ConflictError", err)
	}
	if ce.Cond.Table != store.TableNodes || string(ce.Cond.Key) != "b" || ce.Rev != rb || ce.Cond.Rev != 0 {
		t.Errorf("ConflictError = %s/%s at %d (cond %d), want nodes/b at %d (cond 0)", ce.Cond.Table, ce.Cond.Key, ce.Rev, ce.Cond.Rev, rb)
	}
	_, err = s.ApplyIf(ctx, conds[2:], nil)
	if !errors.As(err, &ce) || ce.Rev != 0 || string(ce.Cond.Key) != "x" {
		t.Errorf("ApplyIf(condition on an absent key at 7) = %v, want ConflictError on agents/x at 0", err)
	}
	if v, _, _ := s.Get(ctx, store.TableAgents, []byte("w")); v != nil {
		t.Errorf("a conflicting batch wrote w=%q", v)
	}
}

// TestOpenUnreachable: an etcd that does not answer is an error naming the
// endpoints, in about the dial timeout.
func TestOpenUnreachable(t *testing.T) {
	ep := "http://127.0.0.1:1" // nothing listens on port 1
	ctx := context.Background()
	_, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: []string{ep}, DialTimeout: 300_000_000, RequestTimeout: 300_000_000})
	if err == nil || !strings.Contains(err.Error(), ep) {
		t.Fatalf("Open(unreachable %s) = %v, want an error naming the endpoint", ep, err)
	}
	if _, err := etcdstore.Open(ctx, etcdstore.Options{}); err == nil {
		t.Errorf("Open(no endpoints) = nil error")
	}
	if _, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: []string{"http://10.0.0.1:2379"}, Username: "root", Password: "secret"}); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("Open(password over http to a remote host) = %v, want a refusal", err)
	}
}

// TestSharedClient: a store on a caller's client shares it (Client,
// Prefix) and leaves it open at Close; its own calls then fail with
// ErrClosed.
func TestSharedClient(t *testing.T) {
	t.Parallel() // its own etcd
	c := etcdtest.Start(t)
	ctx := context.Background()
	owner := open(t, etcdstore.Options{Endpoints: c.Endpoints()})
	if owner.Prefix() != etcdstore.DefaultPrefix {
		t.Errorf("Prefix() = %q, want the default %q", owner.Prefix(), etcdstore.DefaultPrefix)
	}
	p := randomPrefix(t)
	s, err := etcdstore.Open(ctx, etcdstore.Options{Client: owner.Client(), Prefix: p})
	if err != nil {
		t.Fatal(err)
	}
	if s.Client() != owner.Client() || s.Prefix() != p {
		t.Fatalf("Client(), Prefix() = %p, %q; want the given %p, %q", s.Client(), s.Prefix(), owner.Client(), p)
	}
	if err := s.Apply(ctx, []store.Op{store.Put(store.TableMeta, []byte("k"), []byte("v"))}); err != nil {
		t.Fatal(err)
	}
	if resp, err := owner.Client().Get(ctx, etcdstore.Key(p, store.TableMeta, []byte("k"))); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the key layout: Get(%s) = %v, %v", etcdstore.Key(p, store.TableMeta, []byte("k")), resp, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revision(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Revision after Close = %v, want ErrClosed", err)
	}
	if h := s.Health(ctx); h.OK {
		t.Errorf("Health after Close = OK")
	}
	if _, err := owner.Revision(ctx); err != nil {
		t.Errorf("the shared client after the borrower's Close: %v", err)
	}
	if _, err := etcdstore.Open(ctx, etcdstore.Options{Client: owner.Client(), Prefix: "no-slashes"}); err == nil {
		t.Errorf("Open(bad prefix) = nil error")
	}
}
