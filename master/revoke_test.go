package master_test

import (
	"context"
	"crypto"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// revAgent is an agent enrolled on a running master, with its own
// mTLS connection.
type revAgent struct {
	id   string
	key  crypto.Signer
	res  enroll.Result
	conn *grpc.ClientConn
	rpc  gridv1.GridMasterClient
}

func enrollAgentAs(t *testing.T, ctx context.Context, addr string, tok jointoken.Token, id, host string) (*revAgent, error) {
	t.Helper()
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	res, err := enroll.Enroll(ctx, enroll.Request{Addr: addr, Token: tok, AgentID: id, Hostname: host, Key: key})
	if err != nil {
		return nil, err
	}
	a := &revAgent{id: id, key: key, res: res}
	a.dial(t, addr)
	return a, nil
}

func (a *revAgent) dial(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(a.res.TLSConfig(a.key))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	a.conn, a.rpc = conn, gridv1.NewGridMasterClient(conn)
}

func (a *revAgent) register(ctx context.Context) error {
	_, err := a.rpc.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{
		AgentId: a.id, Hostname: "h-" + a.id, Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 4,
	})
	return err
}

func (a *revAgent) heartbeat(ctx context.Context) error {
	_, err := a.rpc.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: a.id})
	return err
}

func operatorClient(t *testing.T, data, addr string) gridv1.GridMasterClient {
	t.Helper()
	creds, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := creds.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return gridv1.NewGridMasterClient(conn)
}

func joinToken(t *testing.T, ctx context.Context, op gridv1.GridMasterClient, uses uint32) jointoken.Token {
	t.Helper()
	jt, err := op.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{Uses: uses})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(jt.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantRevoked(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("%s = %v, want PERMISSION_DENIED naming the revocation", what, err)
	}
}

// Issue 12 revocation, end to end on the real master over mTLS: a revoked
// agent's next call is refused and its open stream is closed at once, its
// record shows revoked while its nodes are left alone, the revocation
// survives a master restart, enrollment under the id is refused until it
// is lifted, and after it is lifted the old certificate stays refused while
// a new enrollment works.
func TestRevokeAgent(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var console testutil.SyncBuffer
	addrs, stop := runMaster(t, data, &console)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op := operatorClient(t, data, addrs.GRPC)
	tok := joinToken(t, ctx, op, 10)

	a1, err := enrollAgentAs(t, ctx, addrs.GRPC, tok, "a1", "host-one")
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.register(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := enrollAgentAs(t, ctx, addrs.GRPC, tok, "a2", "host-two")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.register(ctx); err != nil {
		t.Fatal(err)
	}
	sp, err := op.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	nodeID := sp.GetNode().GetNodeId()

	// A stream the agent holds open (the health service's Watch).
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	watch, err := healthpb.NewHealthClient(a1.conn).Watch(sctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("health watch before the revocation: %v", err)
	}

	rv, err := op.RevokeAgent(ctx, &gridv1.RevokeAgentRequest{AgentId: "a1", Reason: "laptop stolen"})
	if err != nil {
		t.Fatalf("RevokeAgent: %v", err)
	}
	if !rv.GetRevoked() || !strings.HasPrefix(rv.GetRevokedBy(), "operator@127.0.0.1") || rv.GetRevokedUnix() == 0 {
		t.Errorf("RevokeAgent = revoked %v by %q at %d, want revoked by operator@127.0.0.1", rv.GetRevoked(), rv.GetRevokedBy(), rv.GetRevokedUnix())
	}
	// The stream ends at once with the revocation.
	recvErr := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				recvErr <- err
				return
			}
		}
	}()
	select {
	case err := <-recvErr:
		wantRevoked(t, "the revoked agent's open stream", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked agent's stream is still open 5s after the revocation")
	}
	// Its next call is refused; another agent is not affected.
	wantRevoked(t, "heartbeat of the revoked agent", a1.heartbeat(ctx))
	wantRevoked(t, "registration of the revoked agent", a1.register(ctx))
	if err := other.heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat of another agent after a revocation: %v", err)
	}
	// A new stream is refused too.
	if w, err := healthpb.NewHealthClient(a1.conn).Watch(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		_, err = w.Recv()
		wantRevoked(t, "a new stream of the revoked agent", err)
	}

	// The record shows it, the node is untouched.
	ga, err := op.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if !ga.GetRevoked() {
		t.Error("GetAgent(a1).revoked = false after the revocation")
	}
	n, err := op.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: nodeID})
	if err != nil || !n.GetDesired() {
		t.Errorf("node %s of the revoked agent: desired %v, err %v; want still desired", nodeID, n.GetDesired(), err)
	}
	creds, _ := opauth.Load(data)
	var agents []map[string]any
	httpGetJSON(t, "http://"+addrs.HTTP+"/api/agents", creds.Token, &agents)
	found := false
	for _, a := range agents {
		if a["agent_id"] == "a1" {
			found = true
			if a["revoked"] != true || !strings.HasPrefix(a["revoked_by"].(string), "operator@") {
				t.Errorf("GET /api/agents a1 = %v, want revoked by the operator", a)
			}
		}
	}
	if !found {
		t.Error("GET /api/agents lost a1")
	}

	// Enrollment under the revoked id is refused.
	if _, err := enrollAgentAs(t, ctx, addrs.GRPC, tok, "a1", "host-three"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("enroll under a revoked id = %v, want refused naming the revocation", err)
	}

	// The revocation survives a restart.
	stop()
	addrs2, _ := runMaster(t, data, &console)
	op = operatorClient(t, data, addrs2.GRPC)
	a1.dial(t, addrs2.GRPC)
	wantRevoked(t, "heartbeat of the revoked agent after a master restart", a1.heartbeat(ctx))
	if _, err := op.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{NodeId: "nonexistent"}); status.Code(err) != codes.NotFound {
		t.Fatalf("operator call after restart = %v", err)
	}
	n, err = op.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: nodeID})
	if err != nil || !n.GetDesired() {
		t.Errorf("node %s after restart: desired %v, err %v; want still desired", nodeID, n.GetDesired(), err)
	}

	// Lifted: the old certificate stays refused; a new enrollment works.
	if _, err := op.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: "a1"}); err != nil {
		t.Fatalf("UnrevokeAgent: %v", err)
	}
	if _, err := op.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: "a1"}); status.Code(err) != codes.NotFound {
		t.Errorf("UnrevokeAgent of an id not revoked = %v, want NOT_FOUND", err)
	}
	wantRevoked(t, "heartbeat with the old certificate after unrevoke", a1.heartbeat(ctx))
	tok2 := joinToken(t, ctx, op, 1)
	a1b, err := enrollAgentAs(t, ctx, addrs2.GRPC, tok2, "a1", "host-new")
	if err != nil {
		t.Fatalf("a new enrollment after unrevoke: %v", err)
	}
	if err := a1b.register(ctx); err != nil {
		t.Fatalf("register with the new certificate: %v", err)
	}
	if err := a1b.heartbeat(ctx); err != nil {
		t.Fatalf("heartbeat with the new certificate: %v", err)
	}
	wantRevoked(t, "the old certificate after the new enrollment", a1.heartbeat(ctx))
	ga, err = op.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a1"})
	if err != nil || ga.GetRevoked() {
		t.Errorf("GetAgent(a1) after unrevoke: revoked %v, err %v", ga.GetRevoked(), err)
	}
}

func httpGetJSON(t *testing.T, url, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, b)
	}
}
