package binpeers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/binpeers"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// Issue 16 on a real etcd: three masters, each with its own etcd client,
// publish different files under one name at the same moment; exactly one
// publishes, the others see its record and redirect to it.
func TestEtcdConcurrentPublishOneWins(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := context.Background()
	alive := newAlive()
	var regs []*binpeers.Registry
	for _, id := range []string{"m0", "m1", "m2"} {
		st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		alive.set(id, true)
		r, err := binpeers.New(ctx, binpeers.Options{Store: st,
			Coordinator: testCoord{self: cluster.Member{ID: id, HTTPURL: "https://" + id + ".example:7001"}, alive: alive}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		regs = append(regs, r)
	}
	first := -1
	for round := range 10 {
		name := fmt.Sprintf("storage-server-1.0.%d-linux-x86_64", round)
		errs := make([]error, len(regs))
		var wg sync.WaitGroup
		for i, r := range regs {
			wg.Go(func() { errs[i] = r.Admit(name, sum(fmt.Appendf(nil, "%d-%d", round, i)), 1) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			if err == nil {
				if winner >= 0 {
					t.Fatalf("round %d: m%d and m%d both published %s with different checksums", round, winner, i, name)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody published %s: %v", round, name, errs)
		}
		if round == 0 {
			first = winner
		}
		want := fmt.Sprintf("https://m%d.example:7001", winner)
		for i, r := range regs {
			if i == winner {
				continue
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				url, ok := r.Holder(ctx, name)
				if ok && url == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("round %d: m%d's Holder(%s) = %q %v, want %s", round, i, name, url, ok, want)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	// The winner withdraws: its record and the claim go from etcd.
	name := "storage-server-1.0.0-linux-x86_64"
	regs[first].Withdrawn(name)
	st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		_ = st.Scan(ctx, store.TableBinaries, func(k, _ []byte) error {
			if string(k) == name || len(k) > len(name) && string(k[:len(name)+1]) == name+"/" {
				n++
			}
			return nil
		})
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys of %s left in etcd after its only holder withdrew it", n, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
