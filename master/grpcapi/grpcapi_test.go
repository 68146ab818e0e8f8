package grpcapi

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

type harness struct {
	f      *fleet.Fleet
	clock  *testutil.Clock
	client gridv1.GridMasterClient
}

// start serves a real fleet on a bbolt file over gRPC on a loopback port.
func start(t *testing.T) *harness {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Unix(1_700_000_000, 0))
	f, err := fleet.New(context.Background(), fleet.Options{Store: st, Clock: clock, MasterVersion: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	New(f, nil).Register(g)
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
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

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("%s: code = %v (%v), want %v", what, st.Code(), err, code)
	}
	if msgPart != "" && !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("%s: message %q does not contain %q", what, st.Message(), msgPart)
	}
}

func (h *harness) register(t *testing.T, id string, max uint32) *gridv1.RegisterAgentResponse {
	t.Helper()
	resp, err := h.client.RegisterAgent(ctxT(t), &gridv1.RegisterAgentRequest{
		AgentId: id, Hostname: "host-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0",
		MaxStorageNodes: max, Labels: map[string]string{"zone": "a"},
	})
	if err != nil {
		t.Fatalf("RegisterAgent(%s) = %v", id, err)
	}
	return resp
}

func TestAgentLifecycle(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	resp := h.register(t, "a1", 2)
	if resp.GetMasterVersion() != "9.9.9" || resp.GetHeartbeatIntervalSecs() != 5 || resp.GetDesired().GetGeneration() != 1 ||
		resp.GetDesired().GetStorageServerVersion() != "latest" {
		t.Fatalf("RegisterAgent = %v", resp)
	}
	spawn, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{NodeId: "n1", Port: 7100})
	if err != nil {
		t.Fatal(err)
	}
	if spawn.GetNode().GetAgentId() != "a1" || !spawn.GetNode().GetDesired() {
		t.Fatalf("SpawnStorageNode = %v, want placed on a1", spawn)
	}
	gen, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if id := gen.GetNode().GetNodeId(); !strings.HasPrefix(id, "node-") {
		t.Fatalf("generated node id = %q, want node-<hex>", id)
	}
	hb, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{
		AgentId: "a1", AppliedGeneration: 3, AgentVersion: "0.1.0",
		Nodes:   []*gridv1.NodeStatus{{NodeId: "n1", State: gridv1.NodeState_NODE_STATE_RUNNING, Pid: 42, Endpoint: "127.0.0.1:7100", Version: "1.0.0"}},
		Upgrade: &gridv1.UpgradeStatus{Phase: "downloading", FromVersion: "0.1.0", ToVersion: "0.2.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := hb.GetDesired(); d.GetGeneration() != 3 || len(d.GetNodes()) != 2 || d.GetNodes()[0].GetNodeId() != "n1" || d.GetNodes()[0].GetPort() != 7100 {
		t.Fatalf("Heartbeat desired = %v", d)
	}
	node, err := h.client.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if node.GetStatus().GetState() != gridv1.NodeState_NODE_STATE_RUNNING || node.GetStatus().GetPid() != 42 {
		t.Fatalf("GetStorageNodeStatus = %v", node)
	}
	list, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: "a1"})
	if err != nil || len(list.GetNodes()) != 2 {
		t.Fatalf("ListStorageNodes = %v, %v; want 2 nodes", list, err)
	}
	agents, err := h.client.ListAgents(ctx, &gridv1.ListAgentsRequest{})
	if err != nil || len(agents.GetAgents()) != 1 {
		t.Fatalf("ListAgents = %v, %v", agents, err)
	}
	a, err := h.client.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetHealth() != gridv1.AgentHealth_AGENT_HEALTH_HEALTHY || a.GetLabels()["zone"] != "a" || a.GetAppliedGeneration() != 3 ||
		a.GetUpgrade().GetPhase() != "downloading" || len(a.GetNodes()) != 1 || a.GetLastHeartbeatUnix() == 0 {
		t.Fatalf("GetAgent = %v", a)
	}
	cs, err := h.client.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs.GetStatus() != gridv1.ClusterHealth_CLUSTER_HEALTH_HEALTHY || cs.GetTotalNodes() != 2 || cs.GetRunningNodes() != 1 || cs.GetMasterVersion() != "9.9.9" {
		t.Fatalf("GetClusterStatus = %v", cs)
	}
	va, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: "a1", StorageServerVersion: "1.2.3"})
	if err != nil || va.GetDesired().GetStorageServerVersion() != "1.2.3" || va.GetDesired().GetGeneration() != 4 {
		t.Fatalf("SetDesiredVersion(a1) = %v, %v", va, err)
	}
	all, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentVersion: "latest"})
	if err != nil || all.GetDesired().GetAgentVersion() != "latest" {
		t.Fatalf("SetDesiredVersion(all) = %v, %v", all, err)
	}
	stop, err := h.client.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{NodeId: "n1"})
	if err != nil || stop.GetNode().GetDesired() {
		t.Fatalf("StopStorageNode = %v, %v; want desired=false", stop, err)
	}
	_, err = h.client.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: "a1"})
	wantCode(t, "UnregisterAgent(healthy)", err, codes.FailedPrecondition, "--force")
	if _, err := h.client.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: "a1", Force: true}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "a1"})
	wantCode(t, "Heartbeat after unregister", err, codes.NotFound, "register again")
}

func TestRejections(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.register(t, "full", 1)
	h.register(t, "gone", 3)
	if _, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "full", NodeId: "taken"}); err != nil {
		t.Fatal(err)
	}
	// "gone" stops heartbeating; "full" keeps going.
	h.clock.Advance(31 * time.Second)
	if _, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "full"}); err != nil {
		t.Fatal(err)
	}
	if err := h.f.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 129)
	valid := func(id string) *gridv1.RegisterAgentRequest {
		return &gridv1.RegisterAgentRequest{AgentId: id, Platform: "linux", Arch: "x86_64"}
	}
	cases := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"register empty id", func() error { _, err := h.client.RegisterAgent(ctx, valid("")); return err }, codes.InvalidArgument, "agent id is empty"},
		{"register long id", func() error { _, err := h.client.RegisterAgent(ctx, valid(long)); return err }, codes.InvalidArgument, "at most 128"},
		{"register bad charset", func() error { _, err := h.client.RegisterAgent(ctx, valid("a b")); return err }, codes.InvalidArgument, "use only"},
		{"register bad platform", func() error {
			_, err := h.client.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "x", Platform: "beos", Arch: "x86_64"})
			return err
		}, codes.InvalidArgument, "linux, darwin, windows"},
		{"register bad arch", func() error {
			_, err := h.client.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "x", Platform: "linux", Arch: "amd64"})
			return err
		}, codes.InvalidArgument, "x86_64"},
		{"heartbeat unknown agent", func() error {
			_, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "ghost"})
			return err
		}, codes.NotFound, "register again"},
		{"heartbeat empty id", func() error { _, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{}); return err }, codes.InvalidArgument, ""},
		{"heartbeat unspecified node state", func() error {
			_, err := h.client.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "full", Nodes: []*gridv1.NodeStatus{{NodeId: "taken"}}})
			return err
		}, codes.InvalidArgument, "use starting"},
		{"unregister unknown", func() error {
			_, err := h.client.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: "ghost"})
			return err
		}, codes.NotFound, "sutra agents"},
		{"unregister empty", func() error { _, err := h.client.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{}); return err }, codes.InvalidArgument, ""},
		{"spawn on unknown agent", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "ghost"})
			return err
		}, codes.NotFound, ""},
		{"spawn on offline agent", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "gone"})
			return err
		}, codes.FailedPrecondition, "offline"},
		{"spawn beyond capacity", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "full"})
			return err
		}, codes.ResourceExhausted, "max_storage_nodes"},
		{"spawn placed, grid full", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{})
			return err
		}, codes.ResourceExhausted, "add agents"},
		{"spawn duplicate node id", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "full", NodeId: "taken"})
			return err
		}, codes.AlreadyExists, "choose another id"},
		{"spawn long node id", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{NodeId: long})
			return err
		}, codes.InvalidArgument, ""},
		{"spawn bad port", func() error {
			_, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{Port: 65536})
			return err
		}, codes.InvalidArgument, "1-65535"},
		{"stop unknown node", func() error {
			_, err := h.client.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{NodeId: "ghost"})
			return err
		}, codes.NotFound, "sutra nodes"},
		{"stop empty node id", func() error { _, err := h.client.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{}); return err }, codes.InvalidArgument, ""},
		{"status unknown node", func() error {
			_, err := h.client.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: "ghost"})
			return err
		}, codes.NotFound, ""},
		{"status empty node id", func() error {
			_, err := h.client.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{})
			return err
		}, codes.InvalidArgument, ""},
		{"list nodes unknown agent", func() error {
			_, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: "ghost"})
			return err
		}, codes.NotFound, ""},
		{"get unknown agent", func() error { _, err := h.client.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "ghost"}); return err }, codes.NotFound, ""},
		{"get empty agent", func() error { _, err := h.client.GetAgent(ctx, &gridv1.GetAgentRequest{}); return err }, codes.InvalidArgument, ""},
		{"version bad semver", func() error {
			_, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{StorageServerVersion: "1.2"})
			return err
		}, codes.InvalidArgument, "semantic version"},
		{"version nothing", func() error {
			_, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{})
			return err
		}, codes.InvalidArgument, "no version"},
		{"version unknown agent", func() error {
			_, err := h.client.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: "ghost", AgentVersion: "latest"})
			return err
		}, codes.NotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantCode(t, c.name, c.call(), c.code, c.msg) })
	}
	cs, err := h.client.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
	if err != nil || cs.GetOfflineAgents() != 1 || cs.GetHealthyAgents() != 1 {
		t.Fatalf("GetClusterStatus = %v, %v; want 1 healthy 1 offline", cs, err)
	}
}

func TestWatchEvents(t *testing.T) {
	h := start(t)
	h.register(t, "a1", 1)
	h.register(t, "a2", 1)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	// Replay only.
	stream, err := h.client.WatchEvents(ctx, &gridv1.WatchEventsRequest{Tail: 10, NoFollow: true})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ev.GetSeq())
	}
	if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("tail replay seqs = %v, want [1 2]", seqs)
	}

	// Replay since 1, then follow.
	stream, err = h.client.WatchEvents(ctx, &gridv1.WatchEventsRequest{SinceSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetSeq() != 2 || ev.GetType() != fleet.EventAgentRegistered || ev.GetAgentId() != "a2" {
		t.Fatalf("first streamed event = %v, %v; want seq 2 AgentRegistered a2", ev, err)
	}
	if _, err := h.client.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "a1", NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}
	ev, err = stream.Recv()
	if err != nil || ev.GetSeq() != 3 || ev.GetType() != fleet.EventNodeSpawnRequested || ev.GetNodeId() != "n1" || ev.GetTimeUnixMs() == 0 {
		t.Fatalf("live event = %v, %v; want seq 3 NodeSpawnRequested n1", ev, err)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel = %v, want Canceled", err)
	}
}
