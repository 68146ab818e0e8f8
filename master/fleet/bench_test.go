package fleet

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/sutragrid/sutra/master/store"
)

// BenchmarkHeartbeat measures a steady-state heartbeat (nothing changed:
// memory only) across 10,000 agents with 3 nodes each.
func BenchmarkHeartbeat(b *testing.B) {
	st, err := store.OpenDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	f, err := New(context.Background(), Options{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const n = 10000
	reports := make([]Report, n)
	// Register concurrently: group commit shares the fsyncs.
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				id := fmt.Sprintf("a%05d", i)
				var nodes []NodeStatus
				for j := range 3 {
					nodes = append(nodes, NodeStatus{NodeID: fmt.Sprintf("%s-n%d", id, j), State: NodeRunning, PID: int64(j + 1), Endpoint: "10.0.0.1:7100"})
				}
				d, err := f.Register(ctx, Registration{AgentID: id, Platform: "linux", Arch: "x86_64", MaxStorageNodes: 5, Nodes: nodes})
				if err != nil {
					b.Error(err)
					return
				}
				reports[i] = Report{AgentID: id, AppliedGeneration: d.Generation, Nodes: nodes}
				if _, err := f.Heartbeat(ctx, reports[i]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := f.Heartbeat(ctx, reports[i%n]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkSpawn measures a durable mutation (one bbolt commit, shared by
// concurrent callers).
func BenchmarkSpawn(b *testing.B) {
	st, err := store.OpenDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	f, err := New(context.Background(), Options{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := f.Register(ctx, Registration{AgentID: "a", Platform: "linux", Arch: "x86_64", MaxStorageNodes: MaxStorageNodesLimit}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Spawn(ctx, SpawnRequest{AgentID: "a"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
