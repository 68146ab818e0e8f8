package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TestScanIsOneSnapshot: a scan over several pages sees the table as it
// was when it began, whatever is written meanwhile, in key order.
func TestScanIsOneSnapshot(t *testing.T) {
	t.Parallel() // its own etcd
	c := etcdtest.Start(t)
	ctx := context.Background()
	s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t)})
	const n = 600 // more than two pages
	for b := 0; b < n; b += 100 {
		var ops []store.Op
		for i := b; i < b+100; i++ {
			ops = append(ops, store.Put(store.TableAgents, fmt.Appendf(nil, "k%04d", i), []byte("old")))
		}
		if err := s.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err := s.Scan(ctx, store.TableAgents, func(k, v []byte) error {
		if len(got) == 0 { // rewrite the table under the scan
			var ops []store.Op
			for i := 0; i < n; i += 5 {
				ops = append(ops, store.Delete(store.TableAgents, fmt.Appendf(nil, "k%04d", i)))
				ops = append(ops, store.Put(store.TableAgents, fmt.Appendf(nil, "k%04d", i+1), []byte("new")))
				ops = append(ops, store.Put(store.TableAgents, fmt.Appendf(nil, "k%04d.5", i), []byte("new")))
			}
			for len(ops) > 0 {
				m := min(len(ops), 120)
				if err := s.Apply(ctx, ops[:m]); err != nil {
					return err
				}
				ops = ops[m:]
			}
		}
		got = append(got, string(k)+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("Scan saw %d keys, want the %d of its snapshot", len(got), n)
	}
	for i, kv := range got {
		if want := fmt.Sprintf("k%04d=old", i); kv != want {
			t.Fatalf("Scan entry %d = %s, want %s (the table when the scan began)", i, kv, want)
		}
	}
}

// TestSlowWatcherClosed: a watcher that does not read is closed once it
// falls behind its buffer, and resumes without a gap.
func TestSlowWatcherClosed(t *testing.T) {
	t.Parallel() // its own etcd
	c := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := open(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t)})
	ch, err := s.Watch(ctx, store.TableEvents, 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 13 * 100 // more changes than the buffer holds, in batches that do not divide it
	for b := 0; b < n; b += 100 {
		var ops []store.Op
		for i := b; i < b+100; i++ {
			ops = append(ops, store.Put(store.TableEvents, fmt.Appendf(nil, "e%05d", i), []byte("v")))
		}
		if err := s.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the watch overflow
	var got []store.Change
	closed := false
	for len(got) < n {
		select {
		case c, ok := <-ch:
			if ok {
				got = append(got, c)
				continue
			}
			if closed {
				t.Fatalf("closed twice after %d changes", len(got))
			}
			closed = true
			if len(got) == 0 || len(got) >= n {
				t.Fatalf("watch closed after %d of %d changes", len(got), n)
			}
			// Whole batches only: resuming after the last revision
			// delivered misses nothing.
			last := got[len(got)-1].Rev
			if ch, err = s.Watch(ctx, store.TableEvents, last+1); err != nil {
				t.Fatalf("resume Watch(from %d) = %v", last+1, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d changes", len(got), n)
		}
	}
	if !closed {
		t.Errorf("a watcher %d changes behind was not closed (buffer overflow never noticed)", n)
	}
	for i, c := range got {
		if want := fmt.Sprintf("e%05d", i); string(c.Key) != want {
			t.Fatalf("change %d after resuming = %s at %d, want %s: a gap", i, c.Key, c.Rev, want)
		}
	}
}

// startEtcd runs one etcd member (embed) with settings etcdtest does not
// offer, and returns its client URL.
func startEtcd(t *testing.T, scheme string, set func(*embed.Config)) string {
	t.Helper()
	free := func(scheme string) url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return url.URL{Scheme: scheme, Host: l.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cu, pu := free(scheme), free("http")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.Logger, cfg.LogLevel = "zap", "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	set(cfg)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd not ready")
	}
	return cu.String()
}

// TestNoSpace: once etcd's quota is reached, writes fail with ErrNoSpace
// (saying how to recover) and Health reports the alarm; and an etcd whose
// --max-txn-ops is below the master's limit refuses with ErrInvalidOp.
func TestNoSpace(t *testing.T) {
	t.Parallel() // its own etcd
	ep := startEtcd(t, "http", func(cfg *embed.Config) { cfg.QuotaBackendBytes, cfg.MaxTxnOps = 256<<10, 16 })
	ctx := context.Background()
	s := open(t, etcdstore.Options{Endpoints: []string{ep}, Prefix: randomPrefix(t), MaxTxnOps: 64})

	var ops []store.Op
	for i := range 32 {
		ops = append(ops, store.Put(store.TableAgents, fmt.Appendf(nil, "k%d", i), []byte("v")))
	}
	if err := s.Apply(ctx, ops); !errors.Is(err, store.ErrInvalidOp) || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Errorf("Apply(32 keys, etcd --max-txn-ops 16) = %v, want ErrInvalidOp naming --max-txn-ops", err)
	}

	big := make([]byte, 512<<10)
	var err error
	for i := 0; i < 50 && err == nil; i++ {
		err = s.Apply(ctx, []store.Op{store.Put(store.TableEvents, fmt.Appendf(nil, "e%d", i), big)})
	}
	if !errors.Is(err, etcdstore.ErrNoSpace) || !strings.Contains(err.Error(), "alarm disarm") {
		t.Fatalf("Apply past the quota = %v, want ErrNoSpace with the recovery steps", err)
	}
	if err := s.Apply(ctx, []store.Op{store.Put(store.TableAgents, []byte("small"), []byte("v"))}); !errors.Is(err, etcdstore.ErrNoSpace) {
		t.Errorf("small Apply under the NOSPACE alarm = %v, want ErrNoSpace", err)
	}
	h := s.Health(ctx)
	if h.OK || !strings.Contains(h.Detail, "NOSPACE") {
		t.Errorf("Health under the NOSPACE alarm = OK %v, %q; want not OK naming NOSPACE", h.OK, h.Detail)
	}
	if _, _, err := s.Get(ctx, store.TableAgents, []byte("small")); err != nil {
		t.Errorf("Get under the NOSPACE alarm = %v, want reads to work", err)
	}
}
