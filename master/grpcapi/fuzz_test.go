package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// The RPCs FuzzGRPC drives, picked by the fuzzer's op byte.
const (
	opRegister = iota
	opHeartbeat
	opSpawn
	opStop
	opSetDesired
	opListAgents
	opListNodes
	opGetAgent
	opGetNode
	opCluster
	opWatch
	opUnregister
	numOps
)

// fuzzHeapLimit bounds the master's heap during fuzzing: every list and
// record a client can grow is capped, so the heap must stay far below this
// however many calls the fuzzer makes.
const fuzzHeapLimit = 1 << 30

// fuzzServer serves a real fleet on a bbolt file over gRPC (bufconn), with
// no recovery interceptor: a handler panic fails the fuzz run.
func fuzzServer(tb testing.TB) gridv1.GridMasterClient {
	tb.Helper()
	st, err := store.OpenDir(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	f, err := fleet.New(context.Background(), fleet.Options{Store: st, MasterVersion: "1.0.0"})
	if err != nil {
		tb.Fatal(err)
	}
	lis := bufconn.Listen(8 << 20)
	g := grpc.NewServer(grpc.MaxRecvMsgSize(limits.MaxMsgSize))
	New(f, nil).Register(g)
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = conn.Close()
		g.Stop()
		_ = st.Close()
	})
	return gridv1.NewGridMasterClient(conn)
}

// fuzzInput is one generated call.
type fuzzInput struct {
	op                uint8
	id, node, version string
	text              string
	n1, n2            int64
	u                 uint32
	count, lines      uint16
	flag              bool
}

// grow pads one field (long&3: id, node, version, text) to long>>2 bytes
// (at most 4 MiB) by repeating it, so that huge inputs stay small seeds and
// cheap mutations.
func (in *fuzzInput) grow(long uint32) {
	n := min(int(long>>2), 4<<20)
	if n == 0 {
		return
	}
	field := []*string{&in.id, &in.node, &in.version, &in.text}[long&3]
	unit := *field
	if unit == "" {
		unit = "x"
	}
	*field = strings.ToValidUTF8(strings.Repeat(unit, n/len(unit)+1)[:n], "?")
}

func (in fuzzInput) nodes() []*gridv1.NodeStatus {
	var lines []string
	for range int(in.lines) % (limits.MaxLogLines + 2) {
		lines = append(lines, in.text)
	}
	nodes := make([]*gridv1.NodeStatus, int(in.count)%(limits.MaxNodesPerAgent+2))
	for i := range nodes {
		id := in.node
		if i > 0 {
			id = fmt.Sprintf("%s-%d", in.node, i)
		}
		nodes[i] = &gridv1.NodeStatus{
			NodeId: id, State: gridv1.NodeState(in.u % 8), Pid: in.n1, Endpoint: in.text, Version: in.version,
			RestartCount: in.u, LastExit: in.text, SinceUnix: in.n2, LastLogLines: lines, Message: in.text,
		}
	}
	return nodes
}

func (in fuzzInput) upgrade() *gridv1.UpgradeStatus {
	if !in.flag {
		return nil
	}
	return &gridv1.UpgradeStatus{Phase: in.text, FromVersion: in.version, ToVersion: in.version, Message: in.text,
		LastLogLines: []string{in.text, in.text}, UpdatedUnix: in.n2}
}

func pick(u uint32, s string, choices ...string) string {
	if i := int(u % uint32(len(choices)+1)); i < len(choices) {
		return choices[i]
	}
	return s
}

// call makes one RPC and returns its error and the answer's size.
func (in fuzzInput) call(ctx context.Context, c gridv1.GridMasterClient) (err error, size int, read bool) {
	var m proto.Message
	switch in.op % numOps {
	case opRegister:
		labels := map[string]string{in.text: in.version}
		for i := range int(in.count) % 100 {
			labels[fmt.Sprintf("k%d", i)] = in.text
		}
		m, err = c.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{
			AgentId: in.id, Hostname: in.text, Platform: pick(in.u, in.text, "linux", "darwin", "windows"),
			Arch: pick(in.u>>2, in.text, "x86_64", "aarch64", "arm", "x86"), AgentVersion: in.version,
			MaxStorageNodes: in.u, Labels: labels, Nodes: in.nodes(), Upgrade: in.upgrade(), InstanceId: in.node,
		})
	case opHeartbeat:
		m, err = c.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: in.id, AppliedGeneration: uint64(in.n1),
			Nodes: in.nodes(), AgentVersion: in.version, Upgrade: in.upgrade()})
	case opSpawn:
		m, err = c.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: in.id, NodeId: in.node, Port: in.u})
	case opStop:
		m, err = c.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{NodeId: in.node})
	case opSetDesired:
		m, err = c.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: in.id, StorageServerVersion: in.version,
			AgentVersion: pick(in.u, in.text, "", in.version)})
	case opListAgents:
		read = true
		m, err = c.ListAgents(ctx, &gridv1.ListAgentsRequest{PageSize: in.u, PageToken: in.text})
	case opListNodes:
		read = true
		m, err = c.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: in.id, PageSize: in.u, PageToken: in.text})
	case opGetAgent:
		read = true
		m, err = c.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: in.id})
	case opGetNode:
		read = true
		m, err = c.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: in.node})
	case opCluster:
		read = true
		m, err = c.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
	case opWatch:
		read = true
		var s grpc.ServerStreamingClient[gridv1.Event]
		s, err = c.WatchEvents(ctx, &gridv1.WatchEventsRequest{SinceSeq: uint64(in.n1), Tail: in.u, NoFollow: true})
		for err == nil {
			var e *gridv1.Event
			if e, err = s.Recv(); err == nil {
				size += proto.Size(e)
			}
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
	case opUnregister:
		m, err = c.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: in.id, Force: in.flag})
	}
	if err == nil && m != nil {
		size = proto.Size(m)
	}
	return err, size, read
}

// FuzzGRPC drives every GridMaster RPC with generated fields against a real
// fleet and asserts: no panic (the server has no recovery interceptor), no
// INTERNAL/UNKNOWN/DATA_LOSS for any input, no answer beyond the client's
// message limit, and a bounded heap.
func FuzzGRPC(f *testing.F) {
	const year10000 = 253402300800
	long := func(field, n uint32) uint32 { return n<<2 | field }
	logLine := strings.Repeat("L", 60) // 1000 nodes × 50 lines of it: 3 MB
	type seed struct {
		fuzzInput
		long uint32
	}
	seeds := []seed{
		{fuzzInput: fuzzInput{op: opRegister, id: "a1", node: "n1", version: "1.0.0", text: "host", n1: 42, n2: 1_700_000_000, u: 4, count: 1, lines: 2}},
		{fuzzInput: fuzzInput{op: opRegister, id: "a1", node: "n1", version: "1.0.0", text: "host", n1: 42, n2: year10000, u: 4, count: 1}},
		{fuzzInput: fuzzInput{op: opRegister, id: "a1", node: "n1", version: "1.0.0", text: "host", n1: 42, n2: year10000, u: 4, count: 1, flag: true}},
		{fuzzInput: fuzzInput{op: opRegister, id: "a1", node: "n1", version: "1.0.0", text: "host", n1: 42, n2: -year10000, u: 4, count: 1, flag: true}},
		{fuzzInput: fuzzInput{op: opHeartbeat, id: "a1", node: "n1", version: "1.0.0", text: "x", n1: math.MinInt64, n2: year10000, u: 2, count: 1, flag: true}},
		{fuzzInput: fuzzInput{op: opHeartbeat, id: "a1", node: "n1", version: "1.0.0", text: "x", n1: math.MaxInt64, n2: math.MinInt64, u: math.MaxUint32, count: 1, flag: true}},
		{fuzzInput: fuzzInput{op: opRegister, id: "a2", node: ".", version: "1.0.0", text: "h", n1: 1, u: 1, count: 1}},
		{fuzzInput: fuzzInput{op: opRegister, id: "a2", node: "..", version: "1.0.0", text: "h", n1: 1, u: 1, count: 1}},
		{fuzzInput: fuzzInput{op: opRegister, id: "-rf", node: "-rf", version: "1.0.0", text: "h", n1: 1, u: 1, count: 1}},
		{fuzzInput: fuzzInput{op: opSpawn, id: "a1", node: "..", u: 8080}},
		{fuzzInput: fuzzInput{op: opSpawn, id: "a1", node: "-rf", u: 70000}},
		{fuzzInput: fuzzInput{op: opSpawn, id: "a1", node: "n/../../etc", u: 0}},
		{fuzzInput: fuzzInput{op: opSetDesired, id: "a1", version: "9", u: 1}, long: long(2, 3<<20)}, // a 3 MB version
		{fuzzInput: fuzzInput{op: opSetDesired, id: "", version: "9", u: 0}, long: long(2, 3<<20)},
		{fuzzInput: fuzzInput{op: opSetDesired, id: "a1", version: "1.0.0-99999999999999999999", u: 1}},
		{fuzzInput: fuzzInput{op: opRegister, id: "big", node: "n", version: "1.0.0", text: logLine, n1: 7, n2: 1_700_000_000, u: 1000, count: 1000, lines: 50}},
		{fuzzInput: fuzzInput{op: opHeartbeat, id: "big", node: "n", version: "1.0.0", text: logLine, n1: 7, n2: 1_700_000_000, u: 2, count: 1000, lines: 50, flag: true}},
		{fuzzInput: fuzzInput{op: opRegister, id: "a", node: "n", version: "1", text: "t", u: 9, count: 3}, long: long(0, 100_000)},
		{fuzzInput: fuzzInput{op: opRegister, id: "a4", node: "n", version: "1", text: "t", u: 9, count: 3}, long: long(1, 100_000)},
		{fuzzInput: fuzzInput{op: opRegister, id: "a4", node: "n", version: "1", text: "t", u: 9, count: 3}, long: long(3, 100_000)},
		{fuzzInput: fuzzInput{op: opHeartbeat, id: "a1", node: "n1", version: "1.0.0", text: "t", count: 1, lines: 3}, long: long(3, 4<<20)},
		{fuzzInput: fuzzInput{op: opRegister, id: "a3", node: "n", version: "1.0.0", text: "\x00\xff", count: 99}},
		{fuzzInput: fuzzInput{op: opListAgents, u: 0, text: "garbage-token"}},
		{fuzzInput: fuzzInput{op: opListAgents, u: math.MaxUint32}},
		{fuzzInput: fuzzInput{op: opListNodes, id: "big", u: math.MaxUint32}},
		{fuzzInput: fuzzInput{op: opListNodes, id: "a1", u: 1, text: "\x00"}},
		{fuzzInput: fuzzInput{op: opGetAgent, id: "big"}},
		{fuzzInput: fuzzInput{op: opGetNode, node: "n"}},
		{fuzzInput: fuzzInput{op: opCluster}},
		{fuzzInput: fuzzInput{op: opWatch, n1: 0, u: 0}},
		{fuzzInput: fuzzInput{op: opWatch, n1: -1, u: math.MaxUint32}},
		{fuzzInput: fuzzInput{op: opStop, node: "n1"}},
		{fuzzInput: fuzzInput{op: opStop, node: ""}},
		{fuzzInput: fuzzInput{op: opUnregister, id: "a1", flag: false}},
		{fuzzInput: fuzzInput{op: opUnregister, id: "big", flag: true}},
	}
	for _, s := range seeds {
		f.Add(s.op, s.id, s.node, s.version, s.text, s.n1, s.n2, s.u, s.count, s.lines, s.flag, s.long)
	}
	c := fuzzServer(f)
	calls := 0
	f.Fuzz(func(t *testing.T, op uint8, id, node, version, text string, n1, n2 int64, u uint32, count, lines uint16, flag bool, long uint32) {
		// proto3 strings must be UTF-8: the client itself refuses others.
		v := func(s string) string { return strings.ToValidUTF8(s, "?") }
		in := fuzzInput{op: op, id: v(id), node: v(node), version: v(version), text: v(text), n1: n1, n2: n2, u: u, count: count, lines: lines, flag: flag}
		in.grow(long)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err, size, read := in.call(ctx, c)
		switch code := status.Code(err); {
		case code == codes.Internal, code == codes.Unknown, code == codes.DataLoss:
			t.Fatalf("op %d: %v: bad input must be refused with a client error code", in.op%numOps, err)
		case read && code == codes.ResourceExhausted:
			t.Fatalf("op %d: %v: an answer must never exceed the client's message limit", in.op%numOps, err)
		case code == codes.DeadlineExceeded:
			t.Fatalf("op %d: no answer within 30 s", in.op%numOps)
		}
		if size > limits.MaxMsgSize {
			t.Fatalf("op %d: answer of %d bytes exceeds %d", in.op%numOps, size, limits.MaxMsgSize)
		}
		if calls++; calls%64 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > fuzzHeapLimit {
				t.Fatalf("heap is %d MB after %d calls: some client-grown state is not capped", ms.HeapAlloc>>20, calls)
			}
		}
	})
}
