package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/auth"
	mcluster "github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/fleetapi"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/releases"
	"github.com/sutragrid/sutra/master/rollout"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/tokens"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// testMaster is an in-process master built from the real control-plane
// parts: bbolt store, fleet, gRPC on a loopback port, fleet HTTP API. The
// /api/binaries route is a stand-in answering in the design document's format.
type testMaster struct {
	dataDir  string
	grpcAddr string
	httpURL  string
	f        *fleet.Fleet
	grid     gridv1.GridMasterClient
}

func startMaster(t *testing.T) *testMaster {
	t.Helper()
	dataDir := t.TempDir()
	st, err := store.OpenDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.Open(pki.Options{Dir: filepath.Join(dataDir, "tls")})
	if err != nil {
		t.Fatal(err)
	}
	opToken, _, err := auth.LoadOrCreateToken(filepath.Join(dataDir, auth.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := auth.NewPolicy(opToken)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tokens.New(tokens.Options{Store: st, Fingerprint: ca.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fleet.New(context.Background(), fleet.Options{Store: st, MasterVersion: "1.4.0"})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerTLSConfig())),
		grpc.ChainUnaryInterceptor(policy.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(policy.StreamServerInterceptor()))
	coord := mcluster.NewSingle(mcluster.Member{ID: "m-test", GRPCAddr: lis.Addr().String(), Version: "1.4.0"})
	grpcapi.New(f, nil).WithTrust(grpcapi.Trust{PKI: ca, Tokens: tk}).
		WithClusterStatus(func(ctx context.Context) mcluster.Status { return mcluster.StatusOf(ctx, coord, st) }).Register(g)
	rel, err := releases.Open(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	grpcapi.NewRelease(f, rel).Register(g)
	ro, err := rollout.New(context.Background(), rollout.Options{Store: st, Fleet: f, Yanks: rel, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	grpcapi.NewRollout(ro).Register(g)
	roCtx, roStop := context.WithCancel(context.Background())
	roDone := make(chan struct{})
	go func() { _ = ro.Run(roCtx); close(roDone) }()
	go func() { _ = g.Serve(lis) }()

	mux := http.NewServeMux()
	fleetapi.New(f).Register(mux)
	mux.HandleFunc("GET /api/binaries", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, []map[string]any{
			{"version": "1.0.0", "platform": "linux", "arch": "x86_64", "checksum": "a1b2c3d4e5f6a1b2c3d4e5f6", "size_bytes": 19345678, "path": "storage-server-1.0.0-linux-x86_64", "uploaded_at": 1729218000},
		})
	})
	hs := httptest.NewServer(mux)

	creds, err := opauth.Load(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := creds.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		hs.Close()
		g.Stop()
		roStop()
		<-roDone
		_ = st.Close()
	})
	return &testMaster{dataDir: dataDir, grpcAddr: lis.Addr().String(), httpURL: hs.URL, f: f, grid: gridv1.NewGridMasterClient(conn)}
}

// simulateAgent registers an agent and, until the test ends, heartbeats
// reporting every desired node as running.
func (m *testMaster) simulateAgent(t *testing.T, id string, maxNodes uint32) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	agent := m.enroll(t, id)
	resp, err := agent.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: id, Hostname: id + ".lan", Platform: "linux", Arch: "x86_64", AgentVersion: "0.3.0", MaxStorageNodes: maxNodes})
	if err != nil {
		t.Fatal(err)
	}
	desired := resp.GetDesired()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var nodes []*gridv1.NodeStatus
			for i, n := range desired.GetNodes() {
				nodes = append(nodes, &gridv1.NodeStatus{NodeId: n.GetNodeId(), State: gridv1.NodeState_NODE_STATE_RUNNING, Pid: int64(1000 + i), Endpoint: "127.0.0.1:71" + string(rune('0'+i%10)) + "0", Version: "1.0.0"})
			}
			hb, err := agent.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: id, AppliedGeneration: desired.GetGeneration(), Nodes: nodes})
			if err == nil {
				desired = hb.GetDesired()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// enroll enrolls agent id with a new join token, as sutra-agent does.
func (m *testMaster) enroll(t *testing.T, id string) gridv1.GridMasterClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, err := m.grid.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(created.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	res, err := enroll.Enroll(ctx, enroll.Request{Addr: m.grpcAddr, Token: tok, AgentID: id, Hostname: id + ".lan", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(res.TLSConfig(key))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return gridv1.NewGridMasterClient(conn)
}

type result struct {
	code           int
	stdout, stderr string
}

func (m *testMaster) sutra(t *testing.T, args ...string) result {
	t.Helper()
	return sutraEnv(t, map[string]string{"SUTRA_MASTER": m.grpcAddr, "SUTRA_HTTP": m.httpURL, "SUTRA_DATA_DIR": m.dataDir}, args...)
}

func sutraEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut, func(k string) string { return env[k] })
	return result{code, out.String(), errOut.String()}
}

func (r result) want(t *testing.T, code int, stdoutHas ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdoutHas {
		if !strings.Contains(r.stdout, s) {
			t.Fatalf("stdout does not contain %q:\n%s", s, r.stdout)
		}
	}
}

func TestCLIAgainstMaster(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 2)
	m.simulateAgent(t, "agent-2", 4)

	r := m.sutra(t, "status")
	r.want(t, 0, "Cluster:  healthy", "2 total, 2 healthy", "version 1.4.0",
		"Store:    bbolt, ok", "Masters (1, leader m-test)", "MASTER", "m-test", "leader") // issue 16: every master, the leader, the store

	r = m.sutra(t, "agents")
	r.want(t, 0, "AGENT", "agent-1", "agent-2.lan", "linux/x86_64")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("agents table has %d lines, want header + 2:\n%s", len(lines), r.stdout)
	}
	// Columns are aligned: HEALTH starts at the same offset on every line.
	col := strings.Index(lines[0], "HEALTH")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "healthy") {
			t.Fatalf("HEALTH column not aligned at %d:\n%s", col, r.stdout)
		}
	}

	// Spawn with --wait: placed on agent-2 (most free capacity), runs.
	r = m.sutra(t, "nodes", "spawn", "--wait", "--node-id", "n1")
	r.want(t, 0, "node n1 running on agent agent-2")
	r = m.sutra(t, "nodes", "spawn", "--agent", "agent-1", "-o", "json")
	r.want(t, 0)
	var spawned struct {
		NodeID  string `json:"node_id"`
		AgentID string `json:"agent_id"`
		Desired bool   `json:"desired"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &spawned); err != nil || spawned.AgentID != "agent-1" || !strings.HasPrefix(spawned.NodeID, "node-") || !spawned.Desired {
		t.Fatalf("spawn -o json = %q (%v)", r.stdout, err)
	}

	r = m.sutra(t, "nodes")
	r.want(t, 0, "NODE", "n1", spawned.NodeID)
	r = m.sutra(t, "nodes", "--agent", "agent-2", "-o", "json")
	r.want(t, 0)
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil || len(nodes) != 1 || nodes[0]["node_id"] != "n1" {
		t.Fatalf("nodes --agent agent-2 -o json = %s (%v)", r.stdout, err)
	}

	r = m.sutra(t, "agents", "agent-2")
	r.want(t, 0, "Agent:", "agent-2", "n1")
	r = m.sutra(t, "-o", "json", "agents")
	r.want(t, 0)
	var agents []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &agents); err != nil || len(agents) != 2 || agents[0]["health"] != "AGENT_HEALTH_HEALTHY" {
		t.Fatalf("agents -o json = %s (%v)", r.stdout, err)
	}
	r = m.sutra(t, "status", "-o", "json")
	r.want(t, 0, `"total_nodes": 2`, `"backend": "bbolt"`, `"leader": true`)

	r = m.sutra(t, "nodes", "stop", "n1", "--wait")
	r.want(t, 0, "node n1 stopped")

	r = m.sutra(t, "binaries")
	r.want(t, 0, "VERSION", "1.0.0", "linux", "18.4 MiB", "a1b2c3d4e5f6…")
	r = m.sutra(t, "binaries", "-o", "json")
	r.want(t, 0, `"size_bytes": 19345678`)

	r = m.sutra(t, "events", "-n", "100")
	r.want(t, 0, "SEQ", "AgentRegistered", "NodeSpawnRequested", "NodeRunning", "NodeStopRequested")
	r = m.sutra(t, "events", "--since", "1", "-o", "json")
	r.want(t, 0)
	first := strings.SplitN(r.stdout, "\n", 2)[0]
	var ev map[string]any
	if err := json.Unmarshal([]byte(first), &ev); err != nil || ev["seq"] != "2" {
		t.Fatalf("events --since 1 -o json first line = %s (%v), want seq 2", first, err)
	}

	r = m.sutra(t, "version")
	r.want(t, 0, "master "+m.grpcAddr+": 1.4.0")
}

func TestCLIEventsFollow(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr := &testutil.SyncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--master", m.grpcAddr, "events", "-f", "-n", "0"}, pr, &bytes.Buffer{}, func(k string) string {
			if k == "SUTRA_DATA_DIR" {
				return m.dataDir
			}
			return ""
		})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(pr.String(), "NodeSpawnRequested") {
		if time.Now().After(deadline) {
			t.Fatalf("events -f did not show the spawn; output:\n%s", pr.String())
		}
		// Spawn until the follower (which may subscribe late) sees one.
		_, _ = m.grid.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "agent-1"})
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("events -f after Ctrl-C exited %d, want 0", code)
	}
}

func TestCLIErrors(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 1)
	// A port nothing listens on.
	dead := testutil.FreeAddr(t)

	cases := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"unreachable master", map[string]string{"SUTRA_MASTER": dead}, []string{"status"}, exitUnavailable,
			"sutra: cannot reach master at " + dead + ": is sutra-master running? (set --master or SUTRA_MASTER)\n"},
		{"unreachable via flag", nil, []string{"--master", dead, "agents"}, exitUnavailable, "cannot reach master at " + dead},
		{"unreachable http", map[string]string{"SUTRA_HTTP": "http://" + dead}, []string{"binaries"}, exitUnavailable, "set --http or SUTRA_HTTP"},
		{"http address without scheme", map[string]string{"SUTRA_HTTP": "localhost:7001"}, []string{"binaries"}, exitUsage, "want http://host:port"},
		{"no command", nil, nil, exitUsage, "no command given"},
		{"unknown command", nil, []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"unknown flag", nil, []string{"status", "--bogus"}, exitUsage, "flag provided but not defined"},
		{"bad output", nil, []string{"-o", "yaml", "status"}, exitUsage, "use -o table or -o json"},
		{"bad master address", map[string]string{"SUTRA_MASTER": "nohostport"}, []string{"status"}, exitUsage, "not host:port"},
		{"stop needs id", nil, []string{"nodes", "stop"}, exitUsage, "exactly one node id"},
		{"unknown nodes subcommand", nil, []string{"nodes", "restart"}, exitUsage, "unknown nodes subcommand"},
		{"unknown node", map[string]string{"SUTRA_MASTER": m.grpcAddr}, []string{"nodes", "stop", "ghost"}, exitNotFound, `node "ghost" is not known`},
		{"unknown agent", map[string]string{"SUTRA_MASTER": m.grpcAddr}, []string{"agents", "ghost"}, exitNotFound, "sutra agents"},
		{"bad node id", map[string]string{"SUTRA_MASTER": m.grpcAddr}, []string{"nodes", "spawn", "--node-id", "a/b"}, exitUsage, "use only"},
		{"capacity", map[string]string{"SUTRA_MASTER": m.grpcAddr}, []string{"nodes", "spawn", "--agent", "agent-1", "--node-id", "x1"}, 0, ""},
		{"beyond capacity", map[string]string{"SUTRA_MASTER": m.grpcAddr}, []string{"nodes", "spawn", "--agent", "agent-1"}, exitError, "raise max_storage_nodes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"SUTRA_DATA_DIR": m.dataDir}
			maps.Copy(env, c.env)
			r := sutraEnv(t, env, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
				t.Fatalf("sutra %v: exit %d stderr %q; want exit %d and stderr containing %q", c.args, r.code, r.stderr, c.code, c.stderr)
			}
			if c.code != 0 && strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 && c.name != "no command" {
				t.Fatalf("error is not one line: %q", r.stderr)
			}
		})
	}
	r := sutraEnv(t, nil, "help")
	r.want(t, 0, "Exit codes:", "4  master unreachable")
}

// Issue 12: the CLI finds the operator's credentials in the master's data
// dir or takes them from flags/environment; without valid ones it exits 5
// with a one-line hint. Join tokens are created, listed (never the secret)
// and removed.
func TestCLIAuthAndTokens(t *testing.T) {
	m := startMaster(t)
	other, err := pki.Open(pki.Options{Dir: filepath.Join(t.TempDir(), "tls")})
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(otherCA, other.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(m.dataDir, "tls", "ca.crt")
	tokBytes, err := os.ReadFile(filepath.Join(m.dataDir, auth.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokBytes))
	for _, c := range []struct {
		name   string
		env    map[string]string
		code   int
		stderr string
	}{
		{"no credentials", map[string]string{"SUTRA_DATA_DIR": t.TempDir()}, exitUnauthorized, "SUTRA_TOKEN"},
		{"wrong token", map[string]string{"SUTRA_DATA_DIR": m.dataDir, "SUTRA_TOKEN": "not-the-operator-token-123456"}, exitUnauthorized, "unauthorized"},
		{"another master's CA", map[string]string{"SUTRA_TOKEN": token, "SUTRA_CACERT": otherCA}, exitUnauthorized, "SUTRA_CACERT"},
		{"flags and environment", map[string]string{"SUTRA_TOKEN": token, "SUTRA_CACERT": caFile, "SUTRA_DATA_DIR": t.TempDir()}, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"SUTRA_MASTER": m.grpcAddr}
			maps.Copy(env, c.env)
			r := sutraEnv(t, env, "status")
			if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
				t.Fatalf("sutra status: exit %d stderr %q; want exit %d and stderr containing %q", r.code, r.stderr, c.code, c.stderr)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Fatalf("error is not one line: %q", r.stderr)
			}
		})
	}

	r := m.sutra(t, "tokens", "create", "--ttl", "1h", "--uses", "2", "--label", "zone=a")
	r.want(t, 0, "SUTRA1.", "2 use(s)")
	whole := strings.Fields(r.stdout)[0]
	tok, err := jointoken.Parse(whole)
	if err != nil {
		t.Fatalf("tokens create printed %q: %v", whole, err)
	}
	r = m.sutra(t, "tokens")
	r.want(t, 0, tok.ID, "active", "0/2", "zone=a")
	if strings.Contains(r.stdout, whole[strings.LastIndexByte(whole, '.')+1:]) {
		t.Fatal("tokens shows a secret")
	}
	r = m.sutra(t, "tokens", "rm", tok.ID)
	r.want(t, 0, "removed")
	r = m.sutra(t, "tokens", "rm", tok.ID)
	if r.code != exitNotFound {
		t.Fatalf("tokens rm of a removed token: exit %d, want %d (%s)", r.code, exitNotFound, r.stderr)
	}
}
