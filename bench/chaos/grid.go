//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
)

const (
	numAgents     = 5
	nodesPerAgent = 2
	numNodes      = numAgents * nodesPerAgent
	// fullDiskAgent's cache is a small tmpfs (when the machine allows).
	fullDiskAgent = numAgents - 1
	tmpfsSize     = "48m"
)

// master is one sutra-master process.
type master struct {
	*proc
	id                 string
	grpcPort, httpPort int
	dataDir            string
}

func (m *master) grpcAddr() string { return "127.0.0.1:" + strconv.Itoa(m.grpcPort) }
func (m *master) httpURL() string  { return "http://127.0.0.1:" + strconv.Itoa(m.httpPort) }

// agent is one sutra-agent with its own directories.
type agent struct {
	*proc
	id                               string
	dir, cfgPath, cacheDir, stateDir string
	nodesDir, metricsAddr            string
	portStart                        int
}

// etcdMember is one etcd member process (-ha).
type etcdMember struct {
	*proc
	name               string
	clientURL, peerURL string
}

// grid is the fleet under test.
type grid struct {
	o        options
	root     string
	logDir   string
	bins     binaries
	binaries string // the masters' BINARIES_DIR
	pubFile  string
	pubLine  string

	masters []*master
	etcd    []*etcdMember
	agents  []*agent

	token, caFile, joinToken string
	portBase                 int    // first node port of the first agent
	tmpfs                    string // mounted cache dir of fullDiskAgent ("" = none)
	fullDiskSkip             string // why the full-disk fault is skipped

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
	creds  *opauth.Credentials

	http *http.Client
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// setup builds, stages, signs and starts the fleet (masters, agents) and
// returns when every agent is registered and healthy.
func setup(ctx context.Context, o options, root string) (*grid, error) {
	g := &grid{o: o, root: root, logDir: filepath.Join(root, "logs"), binaries: filepath.Join(root, "binaries"),
		conns: map[string]*grpc.ClientConn{}, http: &http.Client{Timeout: 5 * time.Second}}
	for _, d := range []string{g.logDir, g.binaries, filepath.Join(root, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return g, err
		}
	}
	say("building the grid from the tree")
	var err error
	if g.bins, err = build(ctx, filepath.Join(root, "bin"), o.HA); err != nil {
		return g, err
	}
	if err := g.stageAndSign(ctx); err != nil {
		return g, err
	}
	if o.HA {
		if err := g.startEtcd(); err != nil {
			return g, err
		}
	}
	nm := 1
	if o.HA {
		nm = 3
	}
	for i := range nm {
		if err := g.addMaster(fmt.Sprintf("m%d", i+1)); err != nil {
			return g, err
		}
	}
	for _, m := range g.masters {
		if err := g.waitMaster(ctx, m); err != nil {
			return g, err
		}
	}
	creds, err := opauth.Load(g.masters[0].dataDir)
	if err != nil {
		return g, fmt.Errorf("operator credentials: %w", err)
	}
	g.creds = &creds
	g.token, g.caFile = creds.Token, filepath.Join(g.masters[0].dataDir, filepath.FromSlash(opauth.CAFile))
	out, err := g.cli(ctx, "tokens", "create", "--uses", "100", "--ttl", "48h")
	if err != nil {
		return g, fmt.Errorf("sutra tokens create: %w", err)
	}
	g.joinToken = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	// Every agent (also those enrolling later) runs the old version, exactly:
	// publishing does not move them, only set-version and rollouts do.
	if _, err := g.cli(ctx, "agents", "set-version", "--storage-server", vOld); err != nil {
		return g, err
	}
	g.prepareFullDisk()
	// The nodes' ports: a block of 50 below the ephemeral range (32768+)
	// so that outgoing connections do not take them, picked from a free
	// port so that two soaks side by side (CI) rarely share one.
	p, err := freePort()
	if err != nil {
		return g, err
	}
	g.portBase = 20000 + (p%190)*50
	for i := range numAgents {
		if err := g.addAgent(i); err != nil {
			return g, err
		}
	}
	if err := g.waitAgentsHealthy(ctx, 90*time.Second); err != nil {
		return g, err
	}
	return g, nil
}

// stageAndSign copies both storage-server versions into the binaries dir
// under their release names and signs them with a throwaway key.
func (g *grid) stageAndSign(ctx context.Context) error {
	plat, arch, err := platform.Current()
	if err != nil {
		return err
	}
	var staged []string
	for _, v := range []string{vOld, vNew} {
		b, err := os.ReadFile(g.bins.server[v])
		if err != nil {
			return err
		}
		p := filepath.Join(g.binaries, fmt.Sprintf("storage-server-%s-%s-%s", v, plat, arch))
		if err := os.WriteFile(p, b, 0o755); err != nil {
			return err
		}
		staged = append(staged, p)
	}
	keyDir := filepath.Join(g.root, "release-key")
	if out, err := exec.CommandContext(ctx, g.bins.cli, "release", "keygen", "--out", keyDir, "--no-password").CombinedOutput(); err != nil {
		return fmt.Errorf("sutra release keygen: %w\n%s", err, out)
	}
	args := append([]string{"release", "sign", "--key", filepath.Join(keyDir, release.PrivateKeyFile)}, staged...)
	if out, err := exec.CommandContext(ctx, g.bins.cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("sutra release sign: %w\n%s", err, out)
	}
	g.pubFile = filepath.Join(keyDir, release.PublicKeyFile)
	_, g.pubLine, err = release.ReadPublicKeyFile(g.pubFile)
	return err
}

func (g *grid) startEtcd() error {
	var cluster []string
	for i := range 3 {
		cp, err := freePort()
		if err != nil {
			return err
		}
		pp, err := freePort()
		if err != nil {
			return err
		}
		m := &etcdMember{name: fmt.Sprintf("e%d", i+1), clientURL: fmt.Sprintf("http://127.0.0.1:%d", cp), peerURL: fmt.Sprintf("http://127.0.0.1:%d", pp)}
		g.etcd = append(g.etcd, m)
		cluster = append(cluster, m.name+"="+m.peerURL)
	}
	for _, m := range g.etcd {
		dataDir := filepath.Join(g.root, "etcd", m.name)
		var args []string
		if g.bins.etcdKind == "etcdmember" {
			args = []string{"-name", m.name, "-data-dir", dataDir, "-listen-client", m.clientURL, "-listen-peer", m.peerURL,
				"-initial-cluster", strings.Join(cluster, ","), "-fast-election"}
		} else {
			args = []string{"--name", m.name, "--data-dir", dataDir, "--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
				"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL, "--initial-cluster", strings.Join(cluster, ","),
				"--initial-cluster-state", "new"}
		}
		m.proc = &proc{name: "etcd-" + m.name, path: g.bins.etcd[0], args: args, logPath: filepath.Join(g.logDir, "etcd-"+m.name+".log")}
		if err := m.run(); err != nil {
			return err
		}
	}
	return nil
}

func (g *grid) etcdEndpoints() string {
	var eps []string
	for _, m := range g.etcd {
		eps = append(eps, m.clientURL)
	}
	return strings.Join(eps, ",")
}

func (g *grid) addMaster(id string) error {
	gp, err := freePort()
	if err != nil {
		return err
	}
	hp, err := freePort()
	if err != nil {
		return err
	}
	m := &master{id: id, grpcPort: gp, httpPort: hp, dataDir: filepath.Join(g.root, "master-"+id)}
	args := []string{"--release-public-keys", g.pubFile}
	if g.o.HA {
		args = append(args, "--store", "etcd", "--etcd-endpoints", g.etcdEndpoints(), "--master-id", id)
	}
	m.proc = &proc{name: "master-" + id, path: g.bins.master, args: args, env: []string{
		"BINARIES_DIR=" + g.binaries, "SUTRA_DATA_DIR=" + m.dataDir,
		"GRPC_PORT=" + strconv.Itoa(gp), "HTTP_PORT=" + strconv.Itoa(hp), "BIND_ADDRESS=127.0.0.1",
	}, logPath: filepath.Join(g.logDir, "master-"+id+".log")}
	g.masters = append(g.masters, m)
	return m.run()
}

func (g *grid) waitMaster(ctx context.Context, m *master) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if !m.alive() {
			return fmt.Errorf("%s exited at start (log %s)", m.name, m.logPath)
		}
		if code, _, err := g.get(m.httpURL()+"/api/binaries", false); err == nil && code == 200 {
			return nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s does not answer HTTP", m.name)
}

// prepareFullDisk mounts a small tmpfs as fullDiskAgent's cache, or a
// file-backed loop filesystem, or records why the fault is skipped.
func (g *grid) prepareFullDisk() {
	dir := filepath.Join(g.root, fmt.Sprintf("agent-%d", fullDiskAgent+1), "cache")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		g.fullDiskSkip = err.Error()
		return
	}
	if os.Geteuid() != 0 {
		g.fullDiskSkip = "not root"
		return
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+tmpfsSize+",mode=0755"); err == nil {
		g.tmpfs = dir
		return
	}
	img := filepath.Join(g.root, "cache.img")
	if out, err := exec.Command("sh", "-c", fmt.Sprintf("truncate -s %s %q && mkfs.ext4 -q %q && mount -o loop %q %q", tmpfsSize, img, img, img, dir)).CombinedOutput(); err == nil {
		g.tmpfs = dir
	} else {
		g.fullDiskSkip = fmt.Sprintf("no tmpfs/loop mount here: %s", strings.TrimSpace(string(out)))
	}
}

func (g *grid) masterHosts() string {
	var hs []string
	for _, m := range g.masters {
		hs = append(hs, m.grpcAddr())
	}
	return strings.Join(hs, ",")
}

func (g *grid) addAgent(i int) error {
	id := fmt.Sprintf("agent-%d", i+1)
	dir := filepath.Join(g.root, id)
	mp, err := freePort()
	if err != nil {
		return err
	}
	a := &agent{id: id, dir: dir, cfgPath: filepath.Join(dir, "agent-config.toml"), cacheDir: filepath.Join(dir, "cache"),
		stateDir: filepath.Join(dir, "state"), nodesDir: filepath.Join(dir, "nodes"),
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", mp), portStart: g.portBase + i*10}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`# Generated by bench/chaos.
version = 1

[agent]
agent_id = %q
master_host = %q
cache_dir = %q
agent_data_dir = %q
max_storage_nodes = 6
metrics_addr = %q

[storage]
binary_path = ""
master_binary_url = %q
data_path = %q
port_range_start = %d

[monitoring]
heartbeat_interval_secs = 1
health_check_interval_secs = 1

[security]
release_public_keys = [%q]
`, id, g.masterHosts(), a.cacheDir, a.stateDir, a.metricsAddr, g.masters[0].httpURL(), a.nodesDir, a.portStart, g.pubLine)
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	a.proc = &proc{name: id, path: g.bins.agent, args: []string{"run", "--config", a.cfgPath},
		env: []string{"SUTRA_JOIN_TOKEN=" + g.joinToken}, logPath: filepath.Join(g.logDir, id+".log")}
	g.agents = append(g.agents, a)
	return a.run()
}

// procs are every master, agent and etcd member process.
func (g *grid) procs() []*proc {
	var out []*proc
	for _, m := range g.masters {
		out = append(out, m.proc)
	}
	for _, a := range g.agents {
		out = append(out, a.proc)
	}
	for _, e := range g.etcd {
		out = append(out, e.proc)
	}
	return out
}

func (g *grid) agentByID(id string) *agent {
	for _, a := range g.agents {
		if a.id == id {
			return a
		}
	}
	return nil
}

// liveMaster is the first master whose process runs and answers.
func (g *grid) liveMaster() *master {
	for _, m := range g.masters {
		if m.alive() {
			return m
		}
	}
	return g.masters[0]
}

// cli runs the sutra CLI against a live master (each master in turn on a
// connection failure, exit 4).
func (g *grid) cli(ctx context.Context, args ...string) (string, error) {
	var last error
	for attempt := range 6 {
		for _, m := range g.masters {
			if !m.alive() {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			cmd := exec.CommandContext(cctx, g.bins.cli, append([]string{"--master", m.grpcAddr(), "--http", m.httpURL(), "--timeout", "15s"}, args...)...)
			cmd.Env = append(os.Environ(), "SUTRA_TOKEN="+g.token, "SUTRA_CACERT="+g.caFile)
			out, err := cmd.CombinedOutput()
			cancel()
			if err == nil {
				return string(out), nil
			}
			last = fmt.Errorf("sutra %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() != 4 {
				return string(out), last
			}
		}
		if err := sleep(ctx, time.Duration(attempt+1)*time.Second); err != nil {
			return "", err
		}
	}
	if last == nil {
		last = errors.New("no master runs")
	}
	return "", last
}

// conn is a gRPC connection to master m (made once, reconnecting by itself).
func (g *grid) conn(m *master) (*grpc.ClientConn, error) {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	if c, ok := g.conns[m.id]; ok {
		return c, nil
	}
	c, err := g.creds.Dial(m.grpcAddr())
	if err != nil {
		return nil, err
	}
	g.conns[m.id] = c
	return c, nil
}

// get fetches url (with the operator token when auth) and returns the body.
func (g *grid) get(url string, auth bool) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, b, err
}

// api GETs path from a live master into v.
func (g *grid) api(path string, v any) error {
	var last error
	for _, m := range g.masters {
		if !m.alive() {
			continue
		}
		code, b, err := g.get(m.httpURL()+path, true)
		if err != nil {
			last = err
			continue
		}
		if code != 200 {
			last = fmt.Errorf("GET %s = %d %s", path, code, b)
			continue
		}
		return json.Unmarshal(b, v)
	}
	if last == nil {
		last = errors.New("no master runs")
	}
	return last
}

// apiAgent and apiNode are the parts of /api/agents and /api/nodes checked.
type apiAgent struct {
	ID      string `json:"agent_id"`
	Health  string `json:"health"`
	Desired struct {
		StorageServerVersion string `json:"storage_server_version"`
	} `json:"desired"`
}

type apiNode struct {
	ID      string `json:"node_id"`
	AgentID string `json:"agent_id"`
	Desired bool   `json:"desired"`
	Status  *struct {
		State    string `json:"state"`
		PID      int    `json:"pid"`
		Endpoint string `json:"endpoint"`
		Version  string `json:"version"`
	} `json:"status"`
}

func (g *grid) waitAgentsHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var as []apiAgent
		if err := g.api("/api/agents?limit=1000", &as); err == nil {
			n := 0
			for _, a := range as {
				if a.Health == "healthy" {
					n++
				}
			}
			if n >= numAgents {
				return nil
			}
			last = fmt.Sprintf("%d of %d agents healthy", n, numAgents)
		} else {
			last = err.Error()
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("agents not registered and healthy within %s: %s (logs in %s)", timeout, last, g.logDir)
}

// shutdown stops everything the soak started: agents, nodes (every
// storage-server marked with a data dir under root), masters, etcd; and
// unmounts the tmpfs.
func (g *grid) shutdown() {
	for _, a := range g.agents {
		a.kill9()
	}
	for _, p := range scanNodes(g.root) {
		_ = syscall.Kill(p.pid, syscall.SIGCONT)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	for _, m := range g.masters {
		m.kill9()
	}
	for _, m := range g.etcd {
		m.kill9()
	}
	g.connMu.Lock()
	for _, c := range g.conns {
		_ = c.Close()
	}
	g.connMu.Unlock()
	if g.tmpfs != "" {
		if err := syscall.Unmount(g.tmpfs, syscall.MNT_DETACH); err != nil {
			say("unmount %s: %v", g.tmpfs, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func say(format string, args ...any) {
	fmt.Printf("%s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}
