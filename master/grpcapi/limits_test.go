package grpcapi

import (
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// startWith serves a real fleet with opts over gRPC on a loopback port, with
// the master's message limit on both sides.
func startWith(t *testing.T, opts fleet.Options) *harness {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	opts.Store, opts.Clock, opts.MasterVersion = st, clock, "9.9.9"
	f, err := fleet.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(limits.MaxMsgSize))
	New(f, nil).Register(g)
	go func() { _ = g.Serve(lis) }()
	// The agent's client keeps gRPC's default 4 MiB receive limit.
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limits.MaxMsgSize), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		g.Stop()
		_ = st.Close()
	})
	return &harness{f: f, clock: clock, client: gridv1.NewGridMasterClient(conn)}
}

// Issue 9 item 1: a node since_unix or an upgrade updated_unix of year 10000
// panicked in the fleet's JSON encoding and killed the master. It answers
// InvalidArgument now, and the server keeps serving.
func TestYear10000IsInvalidArgument(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	const year10000 = 253402300800
	for _, sec := range []int64{year10000, math.MaxInt64, -1, math.MinInt64} {
		_, err := h.client.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "a1", Platform: "linux", Arch: "x86_64",
			Nodes: []*gridv1.NodeStatus{{NodeId: "n1", State: gridv1.NodeState_NODE_STATE_RUNNING, SinceUnix: sec}}})
		wantCode(t, fmt.Sprintf("RegisterAgent node since %d", sec), err, codes.InvalidArgument, "since")
		_, err = h.client.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "a1", Platform: "linux", Arch: "x86_64",
			Upgrade: &gridv1.UpgradeStatus{Phase: "applying", UpdatedUnix: sec}})
		wantCode(t, fmt.Sprintf("RegisterAgent upgrade updated %d", sec), err, codes.InvalidArgument, "upgrade updated")
	}
	h.register(t, "a1", 1)
	_, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "a1", Upgrade: &gridv1.UpgradeStatus{Phase: "failed", UpdatedUnix: year10000}})
	wantCode(t, "Heartbeat upgrade updated year 10000", err, codes.InvalidArgument, "upgrade updated")
	if _, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "a1"}); err != nil {
		t.Fatalf("the next heartbeat = %v", err)
	}
}

// Issue 9 item 5: hostile values are refused at the gRPC boundary with
// InvalidArgument and a short message (never echoing megabytes back).
func TestHostileFieldsAreInvalidArgument(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.register(t, "a1", 2)
	reg := func(mod func(*gridv1.RegisterAgentRequest)) func() error {
		return func() error {
			r := &gridv1.RegisterAgentRequest{AgentId: "a1", Hostname: "h", Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 2}
			mod(r)
			_, err := h.client.RegisterAgent(ctx, r)
			return err
		}
	}
	node := func(mod func(*gridv1.NodeStatus)) func() error {
		return func() error {
			n := &gridv1.NodeStatus{NodeId: "n1", State: gridv1.NodeState_NODE_STATE_RUNNING, Pid: 7}
			mod(n)
			_, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "a1", Nodes: []*gridv1.NodeStatus{n}})
			return err
		}
	}
	big := strings.Repeat("9", 3<<20)
	cases := []struct {
		name string
		call func() error
		msg  string
	}{
		{"agent id dot", reg(func(r *gridv1.RegisterAgentRequest) { r.AgentId = "." }), "agent id"},
		{"agent id dash", reg(func(r *gridv1.RegisterAgentRequest) { r.AgentId = "-rf" }), "agent id"},
		{"hostname escape", reg(func(r *gridv1.RegisterAgentRequest) { r.Hostname = "\x1b]0;owned\x07" }), "hostname"},
		{"hostname 3 MB", reg(func(r *gridv1.RegisterAgentRequest) { r.Hostname = big }), "hostname"},
		{"agent version 3 MB", reg(func(r *gridv1.RegisterAgentRequest) { r.AgentVersion = "1.0.0-" + big }), "agent version"},
		{"max storage nodes", reg(func(r *gridv1.RegisterAgentRequest) { r.MaxStorageNodes = math.MaxUint32 }), "max storage nodes"},
		{"label control", reg(func(r *gridv1.RegisterAgentRequest) { r.Labels = map[string]string{"zone": "a\nb"} }), "label"},
		{"node id dotdot", node(func(n *gridv1.NodeStatus) { n.NodeId = ".." }), "node id"},
		{"node id dash", node(func(n *gridv1.NodeStatus) { n.NodeId = "-rf" }), "node id"},
		{"pid int64 min", node(func(n *gridv1.NodeStatus) { n.Pid = math.MinInt64 }), "pid"},
		{"pid huge", node(func(n *gridv1.NodeStatus) { n.Pid = 1 << 40 }), "pid"},
		{"restart count", node(func(n *gridv1.NodeStatus) { n.RestartCount = math.MaxUint32 }), "restart count"},
		{"log lines", node(func(n *gridv1.NodeStatus) { n.LastLogLines = make([]string, limits.MaxLogLines+1) }), "lines"},
		{"log line long", node(func(n *gridv1.NodeStatus) { n.LastLogLines = []string{strings.Repeat("l", limits.MaxLogLineLen+1)} }), "log line"},
		{"upgrade phase", func() error {
			_, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "a1", Upgrade: &gridv1.UpgradeStatus{Phase: "rm -rf /"}})
			return err
		}, "upgrade phase"},
		{"desired version 3 MB", func() error {
			_, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{StorageServerVersion: "1.0.0-" + big})
			return err
		}, "storage-server version"},
		{"desired agent version 3 MB", func() error {
			_, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: "a1", AgentVersion: big})
			return err
		}, "agent version"},
		{"spawn node id dotdot", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{NodeId: ".."})
			return err
		}, "node id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			wantCode(t, c.name, err, codes.InvalidArgument, c.msg)
			if len(err.Error()) > 1024 {
				t.Fatalf("%s: the error is %d bytes long", c.name, len(err.Error()))
			}
		})
	}
	a, err := h.client.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a1"})
	if err != nil || a.GetDesired().GetStorageServerVersion() != "latest" || len(a.GetNodes()) != 0 || a.GetHostname() != "host-a1" {
		t.Fatalf("GetAgent after refusals = %v, %v: nothing refused may be stored", a, err)
	}
}

// maxRegistration is the largest registration a real agent sends: every
// field at its limit, MaxNodesPerAgent nodes, logs clipped to the agent's
// report budget the way agent/controlplane clips them.
func maxRegistration() *gridv1.RegisterAgentRequest {
	pad := func(prefix string, n int) string { return prefix + strings.Repeat("x", n-len(prefix)) }
	version := pad("1.0.0-", limits.MaxVersionLen)
	raw := make([]string, 200)
	for i := range raw {
		raw[i] = strings.Repeat("L", 4000)
	}
	budget := limits.MaxReportLogBytes
	r := &gridv1.RegisterAgentRequest{
		AgentId: pad("a", ident.MaxLen), Hostname: pad("h", limits.MaxTextLen), Platform: "linux", Arch: "x86_64",
		AgentVersion: version, MaxStorageNodes: limits.MaxStorageNodes, Labels: map[string]string{},
		InstanceId: pad("i", 128),
		Upgrade: &gridv1.UpgradeStatus{Phase: "rolled_back", FromVersion: version, ToVersion: version, Message: pad("m", limits.MaxMessageLen),
			LastLogLines: limits.ClipLogLines(raw, new(limits.MaxReportLogBytes)), UpdatedUnix: 1_700_000_000},
	}
	for i := range limits.MaxLabels {
		r.Labels[pad(fmt.Sprintf("k%02d", i), limits.MaxLabelKeyLen)] = pad("v", limits.MaxLabelValueLen)
	}
	for i := range limits.MaxNodesPerAgent {
		r.Nodes = append(r.Nodes, &gridv1.NodeStatus{
			NodeId: pad(fmt.Sprintf("n%04d", i), ident.MaxLen), State: gridv1.NodeState_NODE_STATE_FAILED,
			Pid: limits.MaxPID, Endpoint: pad("e", limits.MaxTextLen), Version: version, RestartCount: limits.MaxRestartCount,
			LastExit: pad("x", limits.MaxTextLen), SinceUnix: 1_700_000_000, Message: pad("m", limits.MaxMessageLen),
			LastLogLines: limits.ClipLogLines(raw, &budget),
		})
	}
	return r
}

// Issue 9 items 6 and 8: the largest legitimate registration fits in the
// master's receive limit, and what the master answers about that agent (its
// desired state with every node at the longest id and versions at their
// limit, and GetAgent) fits in the agent's and the CLI's 4 MiB limit.
func TestLargestMessagesFit(t *testing.T) {
	h := startWith(t, fleet.Options{})
	ctx := ctxT(t)
	req := maxRegistration()
	if n := proto.Size(req); n > limits.MaxMsgSize*3/4 {
		t.Fatalf("the largest registration is %d bytes: keep it well under the %d byte limit", n, limits.MaxMsgSize)
	} else {
		t.Logf("largest registration: %d bytes of %d", n, limits.MaxMsgSize)
	}
	resp, err := h.client.RegisterAgent(ctx, req)
	if err != nil {
		t.Fatalf("RegisterAgent at every limit = %.300v", err)
	}
	if len(resp.GetDesired().GetNodes()) != limits.MaxNodesPerAgent {
		t.Fatalf("desired nodes = %d, want %d adopted", len(resp.GetDesired().GetNodes()), limits.MaxNodesPerAgent)
	}
	version := req.GetAgentVersion()
	if _, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{StorageServerVersion: version, AgentVersion: version}); err != nil {
		t.Fatal(err)
	}
	hb, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: req.GetAgentId(), Nodes: req.GetNodes(), Upgrade: req.GetUpgrade(), AgentVersion: version})
	if err != nil {
		t.Fatalf("Heartbeat at every limit = %.300v", err)
	}
	if n := proto.Size(hb); n > limits.MaxMsgSize/4 {
		t.Fatalf("the largest heartbeat answer is %d bytes", n)
	}
	a, err := h.client.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: req.GetAgentId()})
	if err != nil {
		t.Fatalf("GetAgent of the largest agent = %.300v", err)
	}
	if n := proto.Size(a); n > limits.MaxMsgSize {
		t.Fatalf("GetAgent answer is %d bytes", n)
	}
	// One byte too many anywhere is refused, not truncated.
	req.Nodes[999].LastLogLines = append(req.Nodes[999].LastLogLines[:0], strings.Repeat("L", limits.MaxLogLineLen+1))
	_, err = h.client.RegisterAgent(ctx, req)
	wantCode(t, "a log line one byte too long", err, codes.InvalidArgument, "log line")
}

// Issue 9 items 6 and 8: WatchEvents followers are capped; one more answers
// ResourceExhausted, and a slot frees when a watcher leaves.
func TestWatchEventsCap(t *testing.T) {
	h := startWith(t, fleet.Options{MaxWatchers: 2})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	h.register(t, "a1", 1)
	var cancels []context.CancelFunc
	for range 2 {
		wctx, wcancel := context.WithCancel(ctx)
		cancels = append(cancels, wcancel)
		s, err := h.client.WatchEvents(wctx, &gridv1.WatchEventsRequest{Tail: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil { // the replayed event: the watcher is in
			t.Fatal(err)
		}
	}
	s, err := h.client.WatchEvents(ctx, &gridv1.WatchEventsRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, "a third follower", err, codes.ResourceExhausted, "watchers")
	// A replay without follow is still served.
	s, err = h.client.WatchEvents(ctx, &gridv1.WatchEventsRequest{Tail: 1, NoFollow: true})
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		t.Fatalf("replay at the cap = %v", err)
	}
	cancels[0]()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := h.client.WatchEvents(ctx, &gridv1.WatchEventsRequest{Tail: 1})
		if err == nil {
			_, err = s.Recv()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no watcher slot after one left: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
