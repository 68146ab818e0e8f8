//go:build unix

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/supervisor"
)

// nodeHelperEnv marks the children of this test binary: started by the
// agent as a storage node (NODE_ID, STORAGE_PORT), the binary serves
// /healthz on the port until SIGTERM instead of running the tests.
const nodeHelperEnv = "AGENT_TEST_NODE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(nodeHelperEnv) == "1" && os.Getenv("NODE_ID") != "" && os.Getenv("STORAGE_PORT") != "" {
		serveNode()
		os.Exit(0)
	}
	os.Setenv(nodeHelperEnv, "1")
	os.Exit(m.Run())
}

func serveNode() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("STORAGE_PORT"))
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }))
	<-sig
}

// testConfig is a validated agent config in fresh directories; binaryPath ""
// downloads storage-server from binURL. The master is never reachable: the
// tests hand the agent its desired state themselves (onDesired).
func testConfig(t *testing.T, binaryPath, binURL string, portStart, maxNodes int) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if binURL == "" {
		binURL = "http://127.0.0.1:1"
	}
	data := fmt.Sprintf(`version = 1
[agent]
agent_id = "test-agent"
master_host = "127.0.0.1:1"
join_token = "`+testJoinToken+`"
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
`, filepath.Join(dir, "cache"), filepath.Join(dir, "state"), maxNodes, binaryPath, binURL, filepath.Join(dir, "nodes"), portStart)
	cfg, err := config.Parse("agent-config.toml", []byte(data), config.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testLogger(t *testing.T) *slog.Logger { return testutil.Logger(t, slog.LevelInfo) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, cond)
}

func desired(gen uint64, version string, nodes ...string) controlplane.Desired {
	d := controlplane.Desired{Generation: gen, StorageServerVersion: version}
	for _, n := range nodes {
		d.Nodes = append(d.Nodes, controlplane.DesiredNode{NodeID: n})
	}
	return d
}

// ---- a master's binary API, with a download that never ends ----

type binMaster struct {
	srv  *httptest.Server
	plat string
	arch string

	mu       sync.Mutex
	bins     map[string][]byte // version -> content
	sigs     map[string][]byte // file name -> release signature served
	drip     map[string]bool   // versions whose download drips a byte every 100 ms until the client leaves
	dripping int               // downloads dripping now
	dripped  int               // downloads that started dripping
}

func newBinMaster(t *testing.T) *binMaster {
	t.Helper()
	p, a, err := platform.Current()
	if err != nil {
		t.Fatal(err)
	}
	m := &binMaster{plat: p, arch: a, bins: map[string][]byte{}, sigs: map[string][]byte{}, drip: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/binaries/{version}/{platform}/{arch}", func(w http.ResponseWriter, r *http.Request) {
		v := r.PathValue("version")
		m.mu.Lock()
		b, ok := m.bins[v]
		m.mu.Unlock()
		if !ok || r.PathValue("platform") != p || r.PathValue("arch") != a {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintln(w, `{"error":"binary not found"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"version": v, "platform": p, "arch": a, "checksum": sum(b), "size_bytes": len(b),
			"path": m.name(v), "uploaded_at": 1729218000,
		})
	})
	mux.HandleFunc("POST /api/binaries/{version}/{platform}/{arch}/verify", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		b := m.bins[r.PathValue("version")]
		m.mu.Unlock()
		var req struct {
			Checksum string `json:"checksum"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"valid": req.Checksum == sum(b), "expected_checksum": sum(b)})
	})
	mux.HandleFunc("GET /binaries/{name}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		if sig, ok := m.sigs[r.PathValue("name")]; ok {
			m.mu.Unlock()
			_, _ = w.Write(sig)
			return
		}
		var data []byte
		var drip bool
		for v, b := range m.bins {
			if m.name(v) == r.PathValue("name") {
				data, drip = b, m.drip[v]
			}
		}
		if drip {
			m.dripping++
			m.dripped++
		}
		m.mu.Unlock()
		if data == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if !drip {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			_, _ = w.Write(data)
			return
		}
		defer func() {
			m.mu.Lock()
			m.dripping--
			m.mu.Unlock()
		}()
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		rc := http.NewResponseController(w)
		for i := 0; i < len(data); i++ {
			if _, err := w.Write(data[i : i+1]); err != nil {
				return
			}
			_ = rc.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	return m
}

func (m *binMaster) name(v string) string {
	return fmt.Sprintf("storage-server-%s-%s-%s", v, m.plat, m.arch)
}

func (m *binMaster) publish(v string, data []byte, drip bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bins[v], m.drip[v] = data, drip
}

func (m *binMaster) downloads() (dripping, dripped int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dripping, m.dripped
}

func sum(b []byte) string { return testutil.SHA256(b) }

// selfExe is this test binary, which serves as a storage node (TestMain).
func selfExe(t *testing.T) []byte {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stuckUpgrader is a self-update whose download never ends until cancelled.
type stuckUpgrader struct {
	mu        sync.Mutex
	calls     map[string]int
	cancelled map[string]int
}

func (u *stuckUpgrader) Committed() {}

func (u *stuckUpgrader) Desired(ctx context.Context, v string) error {
	if v == "" {
		return nil // no self-update asked for
	}
	u.mu.Lock()
	u.calls[v]++
	u.mu.Unlock()
	<-ctx.Done()
	u.mu.Lock()
	u.cancelled[v]++
	u.mu.Unlock()
	return ctx.Err()
}

func (u *stuckUpgrader) Status() *controlplane.UpgradeStatus { return nil }

func (u *stuckUpgrader) count(v string) (calls, cancelled int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[v], u.cancelled[v]
}

func runningOn(a *Agent, id, version string) bool {
	st, ok := a.sup.NodeStatus(id)
	if !ok || st.State != supervisor.StateRunning {
		return false
	}
	rec, _ := a.rec.get(id)
	return rec.Version == version
}

// Issue 10 item 2: a storage-server download that drips bytes and an agent
// self-update that never finishes do not hold up the control loop: a new
// node (its version cached) starts and a running node stops while both are
// stuck, the applied generation follows the master, and both jobs are
// cancelled when no longer desired.
func TestSpawnAndStopWhileDownloadsAreStuck(t *testing.T) {
	exe := selfExe(t)
	m := newBinMaster(t)
	m.publish("1.0.0", exe, false)
	m.publish("1.1.0", append(append([]byte(nil), exe...), "1.1.0"...), true)

	cfg := testConfig(t, "", m.srv.URL, 21000+os.Getpid()%2000*10, 4)
	up := &stuckUpgrader{calls: map[string]int{}, cancelled: map[string]int{}}
	a, err := New(Options{Config: cfg, Logger: testLogger(t), StopNodesOnExit: true, StopGrace: 5 * time.Second,
		ReconcileInterval: 200 * time.Millisecond, Upgrader: up})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})

	a.onDesired(desired(1, "1.0.0", "node-a"))
	waitFor(t, "node-a running on 1.0.0", func() bool { return runningOn(a, "node-a", "1.0.0") })

	// Ask for storage-server 1.1.0 (its download drips) and agent 2.0.0
	// (its self-update never ends).
	d := desired(2, "1.1.0", "node-a")
	d.AgentVersion = "2.0.0"
	a.onDesired(d)
	waitFor(t, "the 1.1.0 download to be dripping", func() bool { n, _ := m.downloads(); return n == 1 })
	waitFor(t, "the self-update to be stuck", func() bool { n, _ := up.count("2.0.0"); return n == 1 })

	// Now a spawn and a stop.
	d = desired(3, "1.1.0", "node-b")
	d.AgentVersion = "2.0.0"
	a.onDesired(d)
	waitFor(t, "node-b running on the cached 1.0.0 and node-a stopped, while the downloads are stuck", func() bool {
		_, nodeA := a.sup.NodeStatus("node-a")
		return runningOn(a, "node-b", "1.0.0") && !nodeA
	})
	if n, _ := m.downloads(); n != 1 {
		t.Fatalf("%d downloads of 1.1.0 dripping, want the one still in progress (the test must overlap it)", n)
	}
	if calls, _ := up.count("2.0.0"); calls != 1 {
		t.Errorf("self-update to 2.0.0 called %d times, want 1 (still in progress)", calls)
	}
	waitFor(t, "generation 3 applied", func() bool { return a.report().AppliedGeneration == 3 })
	if _, recorded := a.rec.get("node-a"); recorded {
		t.Errorf("node-a still recorded after it stopped and is no longer desired")
	}
	if rep := a.report(); !reportHas(rep, "node-a", supervisor.StateStopped) {
		t.Errorf("report %+v lacks node-a stopped", rep.Nodes)
	}

	// Desired versions change: the stuck jobs are cancelled.
	d = desired(4, "1.0.0", "node-b")
	d.AgentVersion = "2.0.1"
	a.onDesired(d)
	waitFor(t, "the 1.1.0 download cancelled", func() bool { n, _ := m.downloads(); return n == 0 })
	waitFor(t, "the self-update to 2.0.0 cancelled", func() bool { _, c := up.count("2.0.0"); return c == 1 })
	if !runningOn(a, "node-b", "1.0.0") {
		t.Errorf("node-b not running on 1.0.0 after the desired version went back to it")
	}
}

func reportHas(rep controlplane.Report, id string, st supervisor.State) bool {
	for _, n := range rep.Nodes {
		if n.NodeID == id && n.State == st {
			return true
		}
	}
	return false
}

// Issue 10 item 3: thousands of spawn/stop cycles of distinct nodes on a
// one-port range: each stopped, no longer desired node's record is removed
// (its port is free again), nothing stays pending, and a node stopped
// before it ever started is reported stopped. The port probe says the port
// is free (the nodes never bind it: they fail to start), so another
// process of the machine holding port 65535 cannot fail the test.
func TestSpawnStopCyclesOnATinyPortRange(t *testing.T) {
	const port = 65535
	self, _ := os.Executable()
	cfg := testConfig(t, self, "", port, 1)
	a, err := newAgent(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), StopGrace: time.Second},
		seams{portFree: func(int) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.shutdown(true) })
	ctx := t.Context()
	// No processes: the nodes start from a missing file, fail to start and
	// wait in backoff; what is under test is the agent's bookkeeping. (The
	// e2e suite cycles real nodes.)
	a.binary.entry = &cache.Entry{Path: filepath.Join(t.TempDir(), "missing"), Checksum: strings.Repeat("0", 64)}
	a.binary.version, a.binary.gen = "latest", 1

	cycles := 2000
	if testing.Short() {
		cycles = 200
	}
	for i := range cycles {
		id := fmt.Sprintf("node-%d", i)
		a.onDesired(desired(1, "", id))
		if err := a.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		rec, ok := a.rec.get(id)
		why := a.pending.snapshot()[id]
		if !ok || rec.Port != port {
			t.Fatalf("cycle %d: %s recorded %v port %d (pending: %q), want port %d", i, id, ok, rec.Port, why, port)
		}
		a.onDesired(desired(1, ""))
		if err := a.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		j := a.nodeJobs.stopJob(id)
		if j == nil {
			t.Fatalf("cycle %d: no stop job for %s", i, id)
		}
		<-j.done
		if err := a.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		n, p := a.rec.len(), len(a.pending.snapshot())
		if n != 0 || p != 0 {
			t.Fatalf("cycle %d: %d records and %d pending nodes after the stop, want none", i, n, p)
		}
	}
	onDisk, err := a.store.Load()
	if err != nil || len(onDisk.Nodes) != 0 {
		t.Errorf("record on disk after %d cycles: %d nodes (err %v), want 0", cycles, len(onDisk.Nodes), err)
	}

	// A node stopped before it ever started: reported stopped, not pending.
	a.binary.entry = nil
	a.onDesired(desired(2, "", "never"))
	if err := a.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := a.report(); !reportHas(rep, "never", supervisor.StateBackoff) {
		t.Fatalf("report %+v: want the waiting node in backoff", rep.Nodes)
	}
	a.onDesired(desired(3, ""))
	if err := a.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := a.report(); !reportHas(rep, "never", supervisor.StateStopped) || reportHas(rep, "never", supervisor.StateBackoff) || rep.AppliedGeneration != 3 {
		t.Errorf("report %+v applied %d: want the never-started node stopped at generation 3", rep.Nodes, rep.AppliedGeneration)
	}
}

// Issue 10 item 3: the port scan never goes past 65535, nor does its error.
func TestFreePortErrorStaysWithinPorts(t *testing.T) {
	const port = 65535
	self, _ := os.Executable()
	probed := map[int]bool{}
	a, err := newAgent(Options{Config: testConfig(t, self, "", port, 1)},
		seams{portFree: func(p int) bool { probed[p] = true; return false }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.freePort()
	for p := range probed {
		if p > 65535 {
			t.Errorf("freePort probed port %d, above the last port 65535", p)
		}
	}
	if err == nil {
		t.Fatal("freePort with the only port taken = nil error")
	}
	if !strings.Contains(err.Error(), "65535-65535") {
		t.Errorf("freePort error %q, want it to name the range 65535-65535", err)
	}
	for _, f := range regexp.MustCompile(`\d+`).FindAllString(err.Error(), -1) {
		if n, _ := strconv.Atoi(f); n > 65535 {
			t.Errorf("freePort error %q names %d, above the last port 65535", err, n)
		}
	}
}

// Issue 10 item 7: a storage-server version that failed a node upgrade is
// remembered on disk: after a restart it is neither used for the desired
// version it failed at (even at a new generation, e.g. a spawn) nor picked
// as the newest cached binary offline; naming another version and then it
// again allows one new attempt.
func TestFailedUpgradeIsRememberedAcrossRestarts(t *testing.T) {
	m := newBinMaster(t)
	m.publish("1.0.0", []byte("storage-server 1.0.0"), false)
	m.publish("1.1.0", []byte("storage-server 1.1.0, which crashes"), false)
	cfg := testConfig(t, "", m.srv.URL, 23000, 4)
	ctx := t.Context()

	a1, err := New(Options{Config: cfg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a1.fetcher.Ensure(ctx, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	bad, err := a1.fetcher.Ensure(ctx, "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	a1.onDesired(desired(5, "1.1.0"))
	a1.recordFailure(bad, errors.New("node crashed on 1.1.0: exit status 3"))

	// Restart, master down.
	m.srv.Close()
	a2, err := New(Options{Config: cfg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := a2.newestUsable(ctx); err != nil || e.Version != "1.0.0" {
		t.Errorf("offline fallback after restart = %s (%v), want 1.0.0, not the failed 1.1.0", e.Version, err)
	}
	binaryAfter := func(a *Agent, d controlplane.Desired) string {
		t.Helper()
		a.onDesired(d)
		if err := a.reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the binary job", func() bool {
			a.binary.mu.Lock()
			defer a.binary.mu.Unlock()
			return !a.binary.fetch.running() && !a.binary.prune.running()
		})
		b := a.binary.current()
		if b == nil {
			return ""
		}
		return b.Version
	}
	if v := binaryAfter(a2, desired(5, "1.1.0")); v != "1.0.0" {
		t.Errorf("after restart, desired 1.1.0 (failed at generation 5): new nodes start from %q, want 1.0.0", v)
	}
	a3, err := New(Options{Config: cfg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if v := binaryAfter(a3, desired(6, "1.1.0", "node-new")); v != "1.0.0" {
		t.Errorf("a spawn (generation 6) still naming 1.1.0: new nodes start from %q, want 1.0.0", v)
	}
	if v := binaryAfter(a3, desired(7, "1.0.0", "node-new")); v != "1.0.0" {
		t.Errorf("desired 1.0.0: binary %q", v)
	}
	if v := binaryAfter(a3, desired(8, "1.1.0", "node-new")); v != "1.1.0" {
		t.Errorf("1.1.0 named again at generation 8 after 1.0.0: binary %q, want 1.1.0 (one new attempt)", v)
	}
	st, _ := state.Open(cfg.Agent.AgentDataDir)
	if f, err := st.LoadFailures(); err != nil || len(f) != 0 {
		t.Errorf("failure record after the retry was allowed: %v (err %v), want empty", f, err)
	}
	a3.sup.Detach()
}
