package grpcapi

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/releases"
	"github.com/sutragrid/sutra/master/rollout"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

func startRelease(t *testing.T) (gridv1.GridMasterClient, gridv1.ReleaseServiceClient) {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := fleet.New(context.Background(), fleet.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := releases.Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	New(f, nil).Register(g)
	NewRelease(f, rel).Register(g)
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
	return gridv1.NewGridMasterClient(conn), gridv1.NewReleaseServiceClient(conn)
}

// TestReleaseService: pin over gRPC shows in Agent.pins and makes
// SetDesiredVersion FAILED_PRECONDITION; yank lists the agents running the
// version and ListYanked shows it; bad requests are INVALID_ARGUMENT.
func TestReleaseService(t *testing.T) {
	ctx := ctxT(t)
	grid, rc := startRelease(t)
	for i, id := range []string{"a1", "a2"} {
		_, err := grid.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: id, Hostname: "h", Platform: "linux", Arch: "x86_64",
			AgentVersion: "0.1.0", MaxStorageNodes: 2, Nodes: []*gridv1.NodeStatus{{NodeId: id + "-n", State: gridv1.NodeState_NODE_STATE_RUNNING, Pid: int64(100 + i), Version: []string{"1.1.0", "1.0.0"}[i]}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	a, err := rc.PinAgent(ctx, &gridv1.PinAgentRequest{AgentId: "a1", Artifact: "storage-server", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetPins()["storage-server"] != "1.0.0" || a.GetDesired().GetStorageServerVersion() != "1.0.0" {
		t.Fatalf("PinAgent: pins %v desired %s", a.GetPins(), a.GetDesired().GetStorageServerVersion())
	}
	_, err = grid.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: "a1", StorageServerVersion: "2.0.0"})
	wantCode(t, "SetDesiredVersion on a pinned agent", err, codes.FailedPrecondition, "pinned to storage-server 1.0.0; unpin it first")
	got, err := grid.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a1"})
	if err != nil || got.GetPins()["storage-server"] != "1.0.0" {
		t.Fatalf("GetAgent pins = %v, %v", got.GetPins(), err)
	}

	y, err := rc.YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(y.GetRunningAgentIds(), []string{"a1"}) || y.GetYanked().GetArtifact() != "storage-server" {
		t.Fatalf("YankVersion = %v, want running [a1]", y)
	}
	l, err := rc.ListYanked(ctx, &gridv1.ListYankedRequest{})
	if err != nil || len(l.GetYanked()) != 1 || l.GetYanked()[0].GetVersion() != "1.1.0" {
		t.Fatalf("ListYanked = %v, %v", l, err)
	}
	// rollback_to without a rollout controller: agent by agent; the
	// pinned a1 is refused and reported, a2 moves.
	rb, err := rc.YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0", RollbackTo: map[string]string{"a1": "0.9.0", "a2": "0.9.0"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rb.GetRolledBackAgentIds(), []string{"a2"}) || len(rb.GetRollbackFailures()) != 1 || !strings.Contains(rb.GetRollbackFailures()[0], "a1: agent a1 is pinned") {
		t.Fatalf("YankVersion rollback_to = %v", rb)
	}
	if a2, _ := grid.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a2"}); a2.GetDesired().GetStorageServerVersion() != "0.9.0" {
		t.Fatalf("a2 desired = %s after rollback, want 0.9.0", a2.GetDesired().GetStorageServerVersion())
	}
	for _, to := range []map[string]string{{"a2": "1.1.0"}, {"a2": "latest"}, {"../x": "0.9.0"}} {
		_, err := rc.YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0", RollbackTo: to})
		wantCode(t, "rollback_to "+fmt.Sprint(to), err, codes.InvalidArgument, "")
	}
	u, err := rc.UnyankVersion(ctx, &gridv1.UnyankVersionRequest{Version: "1.1.0"})
	if err != nil || !u.GetWasYanked() {
		t.Fatalf("UnyankVersion = %v, %v", u, err)
	}

	for name, call := range map[string]func() error{
		"pin latest": func() error {
			_, err := rc.PinAgent(ctx, &gridv1.PinAgentRequest{AgentId: "a1", Artifact: "storage-server", Version: "latest"})
			return err
		},
		"pin bad artifact": func() error {
			_, err := rc.PinAgent(ctx, &gridv1.PinAgentRequest{AgentId: "a1", Artifact: "x", Version: "1.0.0"})
			return err
		},
		"pin bad id": func() error {
			_, err := rc.PinAgent(ctx, &gridv1.PinAgentRequest{AgentId: "../x", Artifact: "storage-server", Version: "1.0.0"})
			return err
		},
		"unpin bad": func() error {
			_, err := rc.UnpinAgent(ctx, &gridv1.UnpinAgentRequest{AgentId: "a1", Artifact: "x"})
			return err
		},
		"yank bad version": func() error {
			_, err := rc.YankVersion(ctx, &gridv1.YankVersionRequest{Version: strings.Repeat("9", 300)})
			return err
		},
		"yank bad artifact": func() error {
			_, err := rc.YankVersion(ctx, &gridv1.YankVersionRequest{Artifact: "x", Version: "1.0.0"})
			return err
		},
	} {
		wantCode(t, name, call(), codes.InvalidArgument, "")
	}
	_, err = rc.PinAgent(ctx, &gridv1.PinAgentRequest{AgentId: "nobody", Artifact: "storage-server", Version: "1.0.0"})
	wantCode(t, "pin unknown agent", err, codes.NotFound, "")
}

// TestYankRollbackThroughRollout: with a rollout controller wired
// (WithRollback), rollback_to becomes one rollback rollout, nothing is set
// directly.
func TestYankRollbackThroughRollout(t *testing.T) {
	ctx := ctxT(t)
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err := fleet.New(ctx, fleet.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := releases.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	var gotArt string
	var gotTo map[string]string
	s := NewRelease(f, rel).WithRollback(func(_ context.Context, art string, to map[string]string) (string, error) {
		gotArt, gotTo = art, to
		return "r-1", nil
	})
	resp, err := s.YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0", RollbackTo: map[string]string{"a1": "1.0.0"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRolloutId() != "r-1" || gotArt != "storage-server" || gotTo["a1"] != "1.0.0" || len(resp.GetRolledBackAgentIds()) != 0 {
		t.Fatalf("YankVersion = %v; rollback got %s %v", resp, gotArt, gotTo)
	}
}

// TestYankRollbackRealController: RollbackVia over the real rollout
// controller on the same bbolt store: yank --rollback becomes a persisted
// rollback-only rollout of the running agent to the given version.
func TestYankRollbackRealController(t *testing.T) {
	ctx := ctxT(t)
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err := fleet.New(ctx, fleet.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Register(ctx, fleet.Registration{AgentID: "a1", Hostname: "h", Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 1}); err != nil {
		t.Fatal(err)
	}
	rel, err := releases.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := rollout.New(ctx, rollout.Options{Store: st, Fleet: f, Yanks: rel})
	if err != nil {
		t.Fatal(err)
	}
	s := NewRelease(f, rel).WithRollback(RollbackVia(ro))
	resp, err := s.YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0", RollbackTo: map[string]string{"a1": "1.0.0"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ro.Get(resp.GetRolloutId())
	if err != nil {
		t.Fatalf("rollout %q: %v", resp.GetRolloutId(), err)
	}
	if !r.RollingBack || r.Spec.RollbackTo["a1"] != "1.0.0" {
		t.Fatalf("rollout = %+v, want a rollback of a1 to 1.0.0", r)
	}
	// A second rollback while the first is active: the controller refuses
	// it (one active rollout per artifact), FAILED_PRECONDITION on the wire.
	_, err = s.YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0", RollbackTo: map[string]string{"a1": "1.0.0"}})
	wantCode(t, "second rollback", err, codes.FailedPrecondition, "")
}
