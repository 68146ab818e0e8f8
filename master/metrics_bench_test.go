package master_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/master"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// BenchmarkHeartbeatMetrics is the heartbeat path end to end (real gRPC
// over TLS on loopback, 8 enrolled agents heartbeating in parallel, each
// with 3 nodes and a summary) with the metrics on and off: the difference
// is the metrics' overhead per heartbeat.
func BenchmarkHeartbeatMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", on), func(b *testing.B) { benchHeartbeats(b, !on) })
	}
}

func benchHeartbeats(b *testing.B, noMetrics bool) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := b.TempDir()
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	o := master.Options{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: dir + "/bin", DataDir: dir + "/data",
		ShutdownTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler), NoMetrics: noMetrics,
		Ready: func(a master.Addrs) { ready <- a },
	}
	o.RateLimits.Identity.Off, o.RateLimits.Address.Off = true, true
	go func() { done <- master.Run(ctx, o) }()
	var addrs master.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	creds, err := opauth.Load(o.DataDir)
	if err != nil {
		b.Fatal(err)
	}
	op, err := creds.Dial(addrs.GRPC)
	if err != nil {
		b.Fatal(err)
	}
	defer op.Close()
	grid := gridv1.NewGridMasterClient(op)
	const agents = 8
	clients := make([]gridv1.GridMasterClient, agents)
	reqs := make([]*gridv1.HeartbeatRequest, agents)
	for i := range agents {
		id := fmt.Sprintf("bench-%d", i)
		created, err := grid.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
		if err != nil {
			b.Fatal(err)
		}
		tok, err := jointoken.Parse(created.GetToken())
		if err != nil {
			b.Fatal(err)
		}
		key, err := mtls.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		res, err := enroll.Enroll(ctx, enroll.Request{Addr: addrs.GRPC, Token: tok, AgentID: id, Hostname: id, Key: key})
		if err != nil {
			b.Fatal(err)
		}
		conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(res.TLSConfig(key))))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		clients[i] = gridv1.NewGridMasterClient(conn)
		var nodes []*gridv1.NodeStatus
		for j := range 3 {
			nodes = append(nodes, &gridv1.NodeStatus{NodeId: fmt.Sprintf("%s-n%d", id, j), State: gridv1.NodeState_NODE_STATE_RUNNING, Pid: int64(j + 100), Endpoint: "127.0.0.1:7100"})
		}
		reg, err := clients[i].RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: id, Hostname: id, Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 5, Nodes: nodes})
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = &gridv1.HeartbeatRequest{AgentId: id, AppliedGeneration: reg.GetDesired().GetGeneration(), Nodes: nodes, AgentVersion: "1.0.0",
			Summary: &gridv1.AgentSummary{NodesRunning: 3, CacheBytes: 1 << 20}}
		if _, err := clients[i].Heartbeat(ctx, reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(1)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) % agents
		for pb.Next() {
			if _, err := clients[i].Heartbeat(ctx, reqs[i]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
