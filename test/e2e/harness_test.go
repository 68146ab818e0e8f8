//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testproc"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Deadlines for polled conditions: generous, the machine is a loaded 2-core
// box and the master hears from agents every 5 s.
const (
	long  = 90 * time.Second
	short = 30 * time.Second
)

// proc is one child process of the test: internal/testproc's harness.
type proc = testproc.Proc

// nodePortStart is a per-test first node port below the usual ephemeral range
// (32768+), so that outgoing connections do not take the nodes' ports; it is
// derived from a free port so that parallel tests get different ranges.
func nodePortStart(t *testing.T) int {
	return 20000 + (testproc.FreePort(t)%1200)*10
}

// grid is one master (and the agents added to it) in its own directory.
type grid struct {
	t                  *testing.T
	root               string
	binariesDir        string
	masterData         string
	grpcPort, httpPort int
	master             *proc
	conn               *grpc.ClientConn
	rpc                gridv1.GridMasterClient
	logs               []string
	// token and caFile are the operator's credentials (the master's
	// admin.token and tls/ca.crt); joinToken enrolls every agent of the grid.
	token, caFile, joinToken string
}

// newGrid stages the given storage-server versions and starts a master.
func newGrid(t *testing.T, versions ...string) *grid {
	t.Helper()
	needBinaries(t)
	root := t.TempDir()
	// Registered after TempDir, so it runs before the directory is removed:
	// no process started from the test's directory outlives the test.
	t.Cleanup(func() { killProcessesUnder(root) })
	g := &grid{
		t:           t,
		root:        root,
		binariesDir: filepath.Join(root, "binaries"),
		masterData:  filepath.Join(root, "master"),
		grpcPort:    testproc.FreePort(t),
		httpPort:    testproc.FreePort(t),
	}
	if err := os.MkdirAll(g.binariesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		g.stage(v)
	}
	g.startMaster()
	// The operator's credentials, as the master wrote them at first start;
	// every call goes over TLS verified against the master's CA.
	creds, err := opauth.Load(g.masterData)
	if err != nil {
		t.Fatal(err)
	}
	g.token, g.caFile = creds.Token, filepath.Join(g.masterData, filepath.FromSlash(opauth.CAFile))
	conn, err := creds.Dial(g.grpcAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	g.conn, g.rpc = conn, gridv1.NewGridMasterClient(conn)
	t.Cleanup(g.dumpLogsOnFailure)
	// One join token for the grid's agents, as an operator makes with
	// `sutra tokens create --uses 100`.
	ctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	jt, err := g.rpc.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{Uses: 100, TtlSecs: 3600})
	if err != nil {
		t.Fatalf("create the grid's join token: %v", err)
	}
	g.joinToken = jt.GetToken()
	return g
}

func (g *grid) grpcAddr() string { return fmt.Sprintf("127.0.0.1:%d", g.grpcPort) }
func (g *grid) httpURL() string  { return fmt.Sprintf("http://127.0.0.1:%d", g.httpPort) }

// stage copies storage-server version v into the binaries dir under the
// design document's name, atomically (temp name the catalog ignores, then
// rename), as an operator publishing a release would.
func (g *grid) stage(v string) {
	g.t.Helper()
	dst := filepath.Join(g.binariesDir, bins.serverNames[v])
	tmp := filepath.Join(g.root, "."+bins.serverNames[v]+".tmp")
	copyFile(g.t, bins.server[v], tmp, 0o755)
	if err := os.Rename(tmp, dst); err != nil {
		g.t.Fatal(err)
	}
}

// startMaster starts sutra-master on the grid's ports and data dir and waits
// until it answers HTTP and gRPC.
func (g *grid) startMaster() {
	g.t.Helper()
	logPath := filepath.Join(g.root, "master.log")
	g.logs = appendOnce(g.logs, logPath)
	g.master = testproc.Start(g.t, "sutra-master", bins.master, nil, []string{
		"BINARIES_DIR=" + g.binariesDir,
		"SUTRA_DATA_DIR=" + g.masterData,
		"GRPC_PORT=" + strconv.Itoa(g.grpcPort),
		"HTTP_PORT=" + strconv.Itoa(g.httpPort),
		"BIND_ADDRESS=127.0.0.1",
	}, logPath)
	testproc.WaitFor(g.t, long, "master answers HTTP", func() (bool, string) {
		if g.master.Exited() {
			g.t.Fatalf("sutra-master exited at start (log %s):\n%s", logPath, testproc.Tail(logPath, 30))
		}
		code, body, err := httpGet(g.httpURL() + "/api/binaries")
		return err == nil && code == 200, fmt.Sprint(code, " ", body, " ", err)
	})
}

// killMaster kills the master with SIGKILL.
func (g *grid) killMaster() { g.master.Kill() }

// agent is one sutra-agent with its own config and directories.
type agent struct {
	g                                *grid
	id                               string
	dir, cfgPath, cacheDir, nodesDir string
	dataDir, logPath                 string
	proc                             *proc
}

// newAgent writes the agent's config and starts it. binaryPath "" makes it
// download storage-server from the master; monitoring lines are appended to
// the config's [monitoring] table.
func (g *grid) newAgent(id, binaryPath string, monitoring ...string) *agent {
	g.t.Helper()
	return g.newAgentWith(id, binaryPath, agentConfig{}, monitoring...)
}

// agentConfig overrides parts of a test agent's config; zero fields keep the
// defaults (the master's binary URL, a per-test port range, 8 nodes).
type agentConfig struct {
	binaryURL string // storage.master_binary_url
	portStart int    // storage.port_range_start
	maxNodes  int    // agent.max_storage_nodes
}

// newAgentWith is newAgent with config overrides.
func (g *grid) newAgentWith(id, binaryPath string, ac agentConfig, monitoring ...string) *agent {
	g.t.Helper()
	if ac.binaryURL == "" {
		ac.binaryURL = g.httpURL()
	}
	if ac.portStart == 0 {
		ac.portStart = nodePortStart(g.t)
	}
	if ac.maxNodes == 0 {
		ac.maxNodes = 8
	}
	dir := filepath.Join(g.root, id)
	a := &agent{
		g: g, id: id, dir: dir,
		cfgPath:  filepath.Join(dir, "agent-config.toml"),
		cacheDir: filepath.Join(dir, "cache"),
		dataDir:  filepath.Join(dir, "state"),
		nodesDir: filepath.Join(dir, "nodes"),
		logPath:  filepath.Join(dir, "agent.log"),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		g.t.Fatal(err)
	}
	cfg := fmt.Sprintf(`# Generated by the end-to-end tests.
version = 1

[agent]
agent_id = %q
master_host = %q
cache_dir = %q
agent_data_dir = %q
max_storage_nodes = %d

[storage]
binary_path = %q
master_binary_url = %q
data_path = %q
port_range_start = %d

[monitoring]
heartbeat_interval_secs = 1
health_check_interval_secs = 1
`, id, g.grpcAddr(), a.cacheDir, a.dataDir, ac.maxNodes, binaryPath, ac.binaryURL, a.nodesDir, ac.portStart)
	for _, line := range monitoring {
		cfg += line + "\n"
	}
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.logs = appendOnce(g.logs, a.logPath)
	a.start()
	return a
}

// start runs `sutra-agent run --config F` (again, after a kill).
func (a *agent) start() {
	a.g.t.Helper()
	// The join token enrolls the agent on its first start; later starts use
	// the certificate in its data dir and ignore the token.
	a.proc = testproc.Start(a.g.t, a.id, bins.agent, []string{"run", "--config", a.cfgPath}, []string{"SUTRA_JOIN_TOKEN=" + a.g.joinToken}, a.logPath)
}

// kill9 kills the agent process alone (its nodes run in their own process groups).
func (a *agent) kill9() {
	if !a.proc.Exited() {
		_ = syscall.Kill(a.proc.PID(), syscall.SIGKILL)
		<-a.proc.Done()
	}
}

// logCount counts the agent log's lines containing every one of subs.
func (a *agent) logCount(subs ...string) int {
	b, _ := os.ReadFile(a.logPath)
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// logLine is the index of the agent log's first line containing every one of
// subs, or -1.
func (a *agent) logLine(subs ...string) int {
	b, _ := os.ReadFile(a.logPath)
	for i, line := range strings.Split(string(b), "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			return i
		}
	}
	return -1
}

func (a *agent) nodeDataDir(nodeID string) string { return filepath.Join(a.nodesDir, nodeID) }

// cachedBinary is the agent's cache entry of storage-server v.
func (a *agent) cachedBinary(v string) string {
	return filepath.Join(a.cacheDir, "storage-server", v, "storage-server")
}

// waitRegistered waits until the master reports the agent healthy.
func (a *agent) waitRegistered() *gridv1.Agent {
	return a.g.waitAgent(a.id, "registered and healthy", func(ag *gridv1.Agent) bool {
		return ag.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY
	})
}

// spawn asks the master for node nodeID on agent a.
func (a *agent) spawn(nodeID string) {
	a.g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	if _, err := a.g.rpc.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: a.id, NodeId: nodeID}); err != nil {
		a.g.t.Fatalf("SpawnStorageNode(%s, %s): %v", a.id, nodeID, err)
	}
}

// waitRunning waits until the master reports node id running with a pid and
// an endpoint, and the node answers /healthz there.
func (g *grid) waitRunning(id string, extra ...func(*gridv1.NodeStatus) bool) *gridv1.NodeStatus {
	g.t.Helper()
	n := g.waitNode(id, "running and healthy", func(n *gridv1.StorageNode) bool {
		st := n.GetStatus()
		if st.GetState() != gridv1.NodeState_NODE_STATE_RUNNING || st.GetPid() == 0 || st.GetEndpoint() == "" {
			return false
		}
		for _, f := range extra {
			if !f(st) {
				return false
			}
		}
		return healthy(st.GetEndpoint())
	})
	return n.GetStatus()
}

// waitNode polls the master's GetStorageNodeStatus until cond holds.
func (g *grid) waitNode(id, what string, cond func(*gridv1.StorageNode) bool) *gridv1.StorageNode {
	g.t.Helper()
	var got *gridv1.StorageNode
	testproc.WaitFor(g.t, long, "node "+id+" "+what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := g.rpc.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: id})
		if err != nil {
			return false, err.Error()
		}
		got = n
		return cond(n), describeNode(n.GetStatus())
	})
	return got
}

// waitAgent polls the master's GetAgent until cond holds.
func (g *grid) waitAgent(id, what string, cond func(*gridv1.Agent) bool) *gridv1.Agent {
	g.t.Helper()
	var got *gridv1.Agent
	testproc.WaitFor(g.t, long, "agent "+id+" "+what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ag, err := g.rpc.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: id})
		if err != nil {
			return false, err.Error()
		}
		got = ag
		return cond(ag), fmt.Sprintf("health %s, applied generation %d of %d, %d nodes",
			ag.GetHealth(), ag.GetAppliedGeneration(), ag.GetDesired().GetGeneration(), len(ag.GetNodes()))
	})
	return got
}

// events returns the master's event log (GET /api/events).
func (g *grid) events() []event {
	g.t.Helper()
	code, body, err := httpGetAuth(g.httpURL()+"/api/events?limit=1000", g.token)
	if err != nil || code != 200 {
		g.t.Fatalf("GET /api/events = %d %s %v", code, body, err)
	}
	var evs []event
	if err := json.Unmarshal([]byte(body), &evs); err != nil {
		g.t.Fatalf("decode /api/events: %v; body %s", err, body)
	}
	return evs
}

type event struct {
	Seq     uint64 `json:"seq"`
	Type    string `json:"type"`
	AgentID string `json:"agent_id"`
	NodeID  string `json:"node_id"`
	Message string `json:"message"`
}

// runCLI runs the sutra CLI against the grid's master.
func (g *grid) runCLI(args ...string) (string, int) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.cli, append([]string{"--master", g.grpcAddr(), "--http", g.httpURL()}, args...)...)
	cmd.Env = append(os.Environ(), "SUTRA_TOKEN="+g.token, "SUTRA_CACERT="+g.caFile)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		g.t.Fatalf("sutra %s: %v", strings.Join(args, " "), err)
	}
	return string(out), 0
}

// dumpLogsOnFailure prints the tail of every log of a failed test.
func (g *grid) dumpLogsOnFailure() {
	if !g.t.Failed() {
		return
	}
	logs := append([]string(nil), g.logs...)
	nodeLogs, _ := filepath.Glob(filepath.Join(g.root, "*", "state", "logs", "*.log"))
	logs = append(logs, nodeLogs...)
	for _, p := range logs {
		g.t.Logf("---- %s ----\n%s", strings.TrimPrefix(p, g.root+"/"), testproc.Tail(p, 40))
	}
}

func describeNode(st *gridv1.NodeStatus) string {
	if st == nil {
		return "no status reported yet"
	}
	return fmt.Sprintf("state %s pid %d endpoint %s version %s restarts %d last exit %q message %q",
		st.GetState(), st.GetPid(), st.GetEndpoint(), st.GetVersion(), st.GetRestartCount(), st.GetLastExit(), st.GetMessage())
}

// ---- storage node HTTP ----

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpGet(url string) (int, string, error) { return httpGetAuth(url, "") }

// httpGetAuth is httpGet with the operator token (the fleet routes need it).
func httpGetAuth(url, token string) (int, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func healthy(endpoint string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + endpoint + "/healthz")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func putKey(t *testing.T, endpoint, key, value string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+endpoint+"/kv/"+key, strings.NewReader(value))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s/kv/%s: %v", endpoint, key, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT %s/kv/%s = %d %s, want 2xx", endpoint, key, resp.StatusCode, b)
	}
}

func getKey(t *testing.T, endpoint, key string) string {
	t.Helper()
	code, body, err := httpGet("http://" + endpoint + "/kv/" + key)
	if err != nil || code != 200 {
		t.Fatalf("GET %s/kv/%s = %d %q %v, want 200", endpoint, key, code, body, err)
	}
	return body
}

// nodeVersion is what GET /version of the node says.
func nodeVersion(t *testing.T, endpoint string) string {
	t.Helper()
	code, body, err := httpGet("http://" + endpoint + "/version")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/version = %d %q %v", endpoint, code, body, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET %s/version: %v (%s)", endpoint, err, body)
	}
	return v.Version
}

// ---- processes ----

// alive reports whether pid is a live process (not gone, not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// processesWith returns the live pids whose command line contains sub.
func processesWith(sub string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(sub)) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// nodeProcesses are the live processes serving a node's data dir.
func nodeProcesses(dataDir string) []int {
	return processesWith("--data-dir\x00" + dataDir + "\x00")
}

// killProcessesUnder kills every process whose command line names a path
// under root (agents by their config, nodes by their data dir).
func killProcessesUnder(root string) {
	for _, pid := range processesWith(root + "/") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// exePath is the executable a live process runs.
func exePath(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p
}

// ---- files ----

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// masterChecksum is the checksum the master publishes for storage-server v.
func (g *grid) masterChecksum(v string) string {
	g.t.Helper()
	code, body, err := httpGet(fmt.Sprintf("%s/api/binaries/%s/%s/%s", g.httpURL(), v, bins.plat, bins.arch))
	if err != nil || code != 200 {
		g.t.Fatalf("GET /api/binaries/%s/%s/%s = %d %s %v", v, bins.plat, bins.arch, code, body, err)
	}
	var info struct {
		Checksum string `json:"checksum"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		g.t.Fatal(err)
	}
	return info.Checksum
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
