//go:build linux

package ha

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
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

// Deadlines for polled conditions: generous, the machine is a loaded
// 2-core box shared with other builds.
const (
	long  = 90 * time.Second
	short = 30 * time.Second
)

// proc is one child process: internal/testproc's harness.
type proc = testproc.Proc

// ---- etcd ----

// member is one etcdmember process.
type member struct {
	name, dir        string
	client, peer     string // http://127.0.0.1:port
	initial, logPath string
	proc             *proc
}

// start runs the member (state new or existing) and waits for its ready line.
func (m *member) start(t *testing.T, state string) {
	t.Helper()
	before := testproc.CountLines(m.logPath, "etcdmember ready")
	m.proc = testproc.Start(t, m.name, bins.etcd, []string{"-name", m.name, "-data-dir", m.dir,
		"-listen-client", m.client, "-listen-peer", m.peer, "-initial-cluster", m.initial,
		"-state", state, "-fast-election"}, nil, m.logPath)
	testproc.WaitFor(t, long, "etcd member "+m.name+" ready", func() (bool, string) {
		if m.proc.Exited() {
			t.Fatalf("etcd member %s exited:\n%s", m.name, testproc.Tail(m.logPath, 20))
		}
		return testproc.CountLines(m.logPath, "etcdmember ready") > before, testproc.Tail(m.logPath, 3)
	})
}

// isLeader reads etcd_server_is_leader from the member's /metrics.
func (m *member) isLeader() bool {
	_, body, err := httpGet(m.client+"/metrics", "")
	return err == nil && strings.Contains(body, "\netcd_server_is_leader 1\n")
}

// ---- masters ----

type master struct {
	id                 string
	dir, logPath       string
	grpcPort, httpPort int
	proc               *proc
	conn               *grpc.ClientConn
	rpc                gridv1.GridMasterClient
}

func (m *master) grpcAddr() string { return fmt.Sprintf("127.0.0.1:%d", m.grpcPort) }
func (m *master) httpURL() string  { return fmt.Sprintf("http://127.0.0.1:%d", m.httpPort) }
func (m *master) up() bool         { return m.proc != nil && !m.proc.Exited() }

// ha is the whole grid: etcd, masters, agents, in one directory.
type ha struct {
	t           *testing.T
	root        string
	binariesDir string
	etcd        []*member
	masters     []*master
	agents      []*agent
	// The operator's credentials (from m0's data dir: every master writes
	// the shared ones there) and the agents' join token.
	creds     opauth.Credentials
	caFile    string
	joinToken string
	logs      []string
}

// newHA starts 3 etcd members and 3 masters with storage-server versions
// staged in the shared binaries dir, and creates a join token with the CLI.
func newHA(t *testing.T, versions ...string) *ha {
	t.Helper()
	needBinaries(t)
	root := t.TempDir()
	t.Cleanup(func() { killProcessesUnder(root) })
	h := &ha{t: t, root: root, binariesDir: filepath.Join(root, "binaries")}
	t.Cleanup(h.dumpLogsOnFailure)
	if err := os.MkdirAll(h.binariesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		h.stage(v)
	}
	var initial []string
	for i := range 3 {
		m := &member{name: fmt.Sprintf("e%d", i), dir: filepath.Join(root, fmt.Sprintf("etcd%d", i)),
			client: fmt.Sprintf("http://127.0.0.1:%d", testproc.FreePort(t)), peer: fmt.Sprintf("http://127.0.0.1:%d", testproc.FreePort(t)),
			logPath: filepath.Join(root, fmt.Sprintf("etcd%d.log", i))}
		h.etcd = append(h.etcd, m)
		h.logs = append(h.logs, m.logPath)
		initial = append(initial, m.name+"="+m.peer)
	}
	done := make(chan struct{})
	for _, m := range h.etcd {
		m.initial = strings.Join(initial, ",")
		go func() {
			defer func() { done <- struct{}{} }()
			m.proc = testproc.Start(t, m.name, bins.etcd, []string{"-name", m.name, "-data-dir", m.dir,
				"-listen-client", m.client, "-listen-peer", m.peer, "-initial-cluster", m.initial,
				"-state", "new", "-fast-election"}, nil, m.logPath)
		}()
	}
	for range h.etcd {
		<-done
	}
	for _, m := range h.etcd {
		testproc.WaitFor(t, long, "etcd member "+m.name+" ready", func() (bool, string) {
			if m.proc.Exited() {
				t.Fatalf("etcd member %s exited:\n%s", m.name, testproc.Tail(m.logPath, 20))
			}
			return testproc.CountLines(m.logPath, "etcdmember ready") > 0, testproc.Tail(m.logPath, 3)
		})
	}
	for i := range 3 {
		m := &master{id: fmt.Sprintf("m%d", i), dir: filepath.Join(root, fmt.Sprintf("m%d", i)),
			logPath: filepath.Join(root, fmt.Sprintf("m%d.log", i)), grpcPort: testproc.FreePort(t), httpPort: testproc.FreePort(t)}
		h.masters = append(h.masters, m)
		h.logs = append(h.logs, m.logPath)
	}
	// m0 first: it creates the shared CA and operator token; then the others.
	h.startMaster(h.masters[0])
	h.startMaster(h.masters[1])
	h.startMaster(h.masters[2])
	creds, err := opauth.Load(h.masters[0].dir)
	if err != nil {
		t.Fatal(err)
	}
	h.creds, h.caFile = creds, filepath.Join(h.masters[0].dir, filepath.FromSlash(opauth.CAFile))
	for _, m := range h.masters {
		h.dial(m)
	}
	out, code := h.cli(h.masters[1], "tokens", "create", "--uses", "100", "--ttl", "2h", "-o", "json")
	if code != 0 {
		t.Fatalf("sutra tokens create: exit %d\n%s", code, out)
	}
	var jt struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(out), &jt); err != nil || jt.Token == "" {
		t.Fatalf("sutra tokens create -o json: %v\n%s", err, out)
	}
	h.joinToken = jt.Token
	return h
}

func (h *ha) endpoints() string {
	var eps []string
	for _, m := range h.etcd {
		eps = append(eps, m.client)
	}
	return strings.Join(eps, ",")
}

// startMaster starts (or restarts) m and waits until it answers HTTP.
func (h *ha) startMaster(m *master) {
	h.t.Helper()
	m.proc = testproc.Start(h.t, m.id, bins.master, []string{
		"--store", "etcd", "--etcd-endpoints", h.endpoints(), "--master-id", m.id,
		"--grpc-port", strconv.Itoa(m.grpcPort), "--http-port", strconv.Itoa(m.httpPort),
		"--data-dir", m.dir, "--binaries-dir", h.binariesDir, "--bind", "127.0.0.1",
	}, nil, m.logPath)
	testproc.WaitFor(h.t, long, "master "+m.id+" answers HTTP", func() (bool, string) {
		if m.proc.Exited() {
			h.t.Fatalf("master %s exited at start:\n%s", m.id, testproc.Tail(m.logPath, 30))
		}
		code, body, err := httpGet(m.httpURL()+"/api/binaries", "")
		return err == nil && code == 200, fmt.Sprint(code, " ", body, " ", err)
	})
}

func (h *ha) dial(m *master) {
	h.t.Helper()
	if m.conn != nil {
		return
	}
	conn, err := h.creds.Dial(m.grpcAddr())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	m.conn, m.rpc = conn, gridv1.NewGridMasterClient(conn)
}

// live is the first master that runs (the test's way to "any master").
func (h *ha) live() *master {
	for _, m := range h.masters {
		if m.up() {
			return m
		}
	}
	h.t.Fatal("no master runs")
	return nil
}

// cli runs the sutra CLI against master m.
func (h *ha) cli(m *master, args ...string) (string, int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.cli, append([]string{"--master", m.grpcAddr(), "--http", m.httpURL()}, args...)...)
	cmd.Env = append(os.Environ(), "SUTRA_TOKEN="+h.creds.Token, "SUTRA_CACERT="+h.caFile)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &stdout
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return stdout.String(), ee.ExitCode()
	}
	if err != nil {
		h.t.Fatalf("sutra %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), 0
}

// stage copies storage-server v into the shared binaries dir atomically.
func (h *ha) stage(v string) {
	h.t.Helper()
	dst := filepath.Join(h.binariesDir, bins.serverNames[v])
	tmp := filepath.Join(h.root, "."+bins.serverNames[v]+".tmp")
	b, err := os.ReadFile(bins.server[v])
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		h.t.Fatal(err)
	}
}

// waitPublished waits until every running master serves storage-server v.
func (h *ha) waitPublished(v string) {
	h.t.Helper()
	for _, m := range h.masters {
		if !m.up() {
			continue
		}
		testproc.WaitFor(h.t, long, m.id+" publishes storage-server "+v, func() (bool, string) {
			code, body, err := httpGet(m.httpURL()+"/api/binaries/"+v+"/"+bins.plat+"/"+bins.arch, "")
			return err == nil && code == 200, body
		})
	}
}

// clusterView is GET /api/cluster as the test reads it.
type clusterView struct {
	Masters []struct {
		ID       string `json:"id"`
		GRPCAddr string `json:"grpc_addr"`
		Leader   bool   `json:"leader"`
	} `json:"masters"`
	Leader string `json:"leader"`
	Store  struct {
		Backend string `json:"backend"`
		OK      bool   `json:"ok"`
		Detail  string `json:"detail"`
		Members []struct {
			Endpoint string `json:"endpoint"`
			OK       bool   `json:"ok"`
			Leader   bool   `json:"leader"`
			Error    string `json:"error"`
		} `json:"members"`
	} `json:"store"`
}

func (h *ha) cluster(m *master) (clusterView, error) {
	var v clusterView
	code, body, err := httpGet(m.httpURL()+"/api/cluster", h.creds.Token)
	if err != nil {
		return v, err
	}
	if code != 200 {
		return v, fmt.Errorf("GET /api/cluster = %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		return v, fmt.Errorf("decode /api/cluster: %w (%s)", err, body)
	}
	return v, nil
}

// leader waits until every running master names the same running leader
// and returns it.
func (h *ha) leader(timeout time.Duration) *master {
	h.t.Helper()
	var lead *master
	testproc.WaitFor(h.t, timeout, "the running masters agree on a running leader", func() (bool, string) {
		names := map[string]bool{}
		var seen []string
		for _, m := range h.masters {
			if !m.up() {
				continue
			}
			v, err := h.cluster(m)
			if err != nil {
				return false, err.Error()
			}
			names[v.Leader] = true
			seen = append(seen, m.id+"->"+v.Leader)
		}
		if len(names) != 1 {
			return false, strings.Join(seen, " ")
		}
		for _, m := range h.masters {
			if names[m.id] && m.up() {
				lead = m
				return true, ""
			}
		}
		return false, strings.Join(seen, " ")
	})
	return lead
}

// ---- agents ----

type agent struct {
	h                               *ha
	id                              string
	dir, cfgPath, nodesDir, logPath string
	proc                            *proc
}

// newAgent writes an agent config naming every master and starts it.
func (h *ha) newAgent(id string, portStart int) *agent {
	h.t.Helper()
	dir := filepath.Join(h.root, id)
	a := &agent{h: h, id: id, dir: dir, cfgPath: filepath.Join(dir, "agent-config.toml"),
		nodesDir: filepath.Join(dir, "nodes"), logPath: filepath.Join(dir, "agent.log")}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	var hosts, urls []string
	for _, m := range h.masters {
		hosts = append(hosts, m.grpcAddr())
		urls = append(urls, m.httpURL())
	}
	cfg := fmt.Sprintf(`# Generated by the HA end-to-end test.
version = 1

[agent]
agent_id = %q
master_host = %q
cache_dir = %q
agent_data_dir = %q
max_storage_nodes = 8

[storage]
binary_path = ""
master_binary_url = %q
data_path = %q
port_range_start = %d

[monitoring]
heartbeat_interval_secs = 1
health_check_interval_secs = 1
`, id, strings.Join(hosts, ","), filepath.Join(dir, "cache"), filepath.Join(dir, "state"),
		strings.Join(urls, ","), a.nodesDir, portStart)
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.logs = append(h.logs, a.logPath)
	h.agents = append(h.agents, a)
	a.start()
	return a
}

func (a *agent) start() {
	a.proc = testproc.Start(a.h.t, a.id, bins.agent, []string{"run", "--config", a.cfgPath},
		[]string{"SUTRA_JOIN_TOKEN=" + a.h.joinToken}, a.logPath)
}

// kill9 kills the agent process alone (its nodes have their own groups).
func (a *agent) kill9() {
	if !a.proc.Exited() {
		_ = syscall.Kill(a.proc.PID(), syscall.SIGKILL)
		<-a.proc.Done()
	}
}

// master is the master the agent holds an established TCP connection to
// its gRPC port with (from /proc: the agent's socket inodes matched in
// /proc/net/tcp), or nil.
func (a *agent) master() *master {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", a.proc.PID()))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", a.proc.PID(), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, _ := os.ReadFile("/proc/net/tcp")
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "01" || !inodes[f[9]] {
			continue
		}
		_, port, ok := strings.Cut(f[2], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseInt(port, 16, 32)
		if err != nil {
			continue
		}
		for _, m := range a.h.masters {
			if m.grpcPort == int(p) && m.up() {
				return m
			}
		}
	}
	return nil
}

// waitHealthy waits until master m reports every agent healthy (with a
// heartbeat at since or later when since is not zero: only the master an
// agent heartbeats to knows its latest heartbeat).
func (h *ha) waitHealthy(m *master, since time.Time) {
	h.t.Helper()
	for _, a := range h.agents {
		testproc.WaitFor(h.t, long, m.id+" sees agent "+a.id+" healthy", func() (bool, string) {
			ag, err := getAgent(m, a.id)
			if err != nil {
				return false, err.Error()
			}
			return ag.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY && (since.IsZero() || ag.GetLastHeartbeatUnix() >= since.Unix()),
				fmt.Sprintf("health %s last heartbeat %d", ag.GetHealth(), ag.GetLastHeartbeatUnix())
		})
	}
}

func getAgent(m *master, id string) (*gridv1.Agent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return m.rpc.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: id})
}

// spawn asks master m for node nodeID on agent a.
func (a *agent) spawn(m *master, nodeID string) {
	a.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), short)
	defer cancel()
	if _, err := m.rpc.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: a.id, NodeId: nodeID}); err != nil {
		a.h.t.Fatalf("SpawnStorageNode(%s, %s) on %s: %v", a.id, nodeID, m.id, err)
	}
}

// waitRunning waits until master m reports node id running and the node
// answers /healthz at its endpoint; extra conditions may be added.
func (h *ha) waitRunning(m *master, id string, extra ...func(*gridv1.NodeStatus) bool) *gridv1.NodeStatus {
	h.t.Helper()
	var st *gridv1.NodeStatus
	testproc.WaitFor(h.t, long, "node "+id+" running on "+m.id, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := m.rpc.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: id})
		if err != nil {
			return false, err.Error()
		}
		st = n.GetStatus()
		if st.GetState() != gridv1.NodeState_NODE_STATE_RUNNING || st.GetEndpoint() == "" {
			return false, st.String()
		}
		for _, f := range extra {
			if !f(st) {
				return false, st.String()
			}
		}
		code, _, err := httpGet("http://"+st.GetEndpoint()+"/healthz", "")
		return err == nil && code == 200, st.String()
	})
	return st
}

// views says how every running master sees node id and its agent (for
// failure messages: the masters' views may differ).
func (h *ha) views(nodeID, agentID string) string {
	var out []string
	for _, m := range h.masters {
		if !m.up() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := m.rpc.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: nodeID})
		ag, aerr := m.rpc.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: agentID})
		cancel()
		out = append(out, fmt.Sprintf("%s: node %s {%v} err %v; agent %s health %s heartbeat %d applied generation %d of %d (version %q) err %v",
			m.id, nodeID, n.GetStatus(), err, agentID, ag.GetHealth(), ag.GetLastHeartbeatUnix(),
			ag.GetAppliedGeneration(), ag.GetDesired().GetGeneration(), ag.GetDesired().GetStorageServerVersion(), aerr))
	}
	return strings.Join(out, "\n")
}

// events is GET /api/events on master m.
func (h *ha) events(m *master) []event {
	h.t.Helper()
	code, body, err := httpGet(m.httpURL()+"/api/events?limit=1000", h.creds.Token)
	if err != nil || code != 200 {
		h.t.Fatalf("GET %s/api/events = %d %s %v", m.id, code, body, err)
	}
	var evs []event
	if err := json.Unmarshal([]byte(body), &evs); err != nil {
		h.t.Fatalf("decode /api/events: %v; body %s", err, body)
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

// caFingerprint is the SHA-256 of the CA certificate in master m's data dir.
func caFingerprint(t *testing.T, m *master) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.dir, filepath.FromSlash(opauth.CAFile)))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM in the CA file", m.id)
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:])
}

// dumpLogsOnFailure prints the tail of every log of a failed test.
func (h *ha) dumpLogsOnFailure() {
	if !h.t.Failed() {
		return
	}
	logs := append([]string(nil), h.logs...)
	nodeLogs, _ := filepath.Glob(filepath.Join(h.root, "*", "state", "logs", "*.log"))
	logs = append(logs, nodeLogs...)
	for _, p := range logs {
		h.t.Logf("---- %s ----\n%s", strings.TrimPrefix(p, h.root+"/"), testproc.Tail(p, 30))
	}
}

// ---- helpers ----

var httpClient = &http.Client{Timeout: 5 * time.Second}

// httpGet GETs url, with the operator token when given.
func httpGet(url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
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

// putKey writes key=value to a storage node's KV API; err unless 2xx.
func putKey(endpoint, key, value string) error {
	req, err := http.NewRequest(http.MethodPut, "http://"+endpoint+"/kv/"+key, strings.NewReader(value))
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("PUT %s/kv/%s = %d %s", endpoint, key, resp.StatusCode, b)
	}
	return nil
}

// killProcessesUnder kills every process whose command line names a path
// under root (agents by their config, nodes by their data dir).
func killProcessesUnder(root string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), root+"/") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
