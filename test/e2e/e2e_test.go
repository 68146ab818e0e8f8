//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testproc"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// runNode asks for node id on agent a and waits until it runs and is healthy.
func runNode(a *agent, id string) *gridv1.NodeStatus {
	a.g.t.Helper()
	a.spawn(id)
	return a.g.waitRunning(id)
}

// An agent with an empty binary_path downloads storage-server from the
// master, verifies and caches it, and starts the node from the cache; the
// node answers /healthz and stores a key.
func TestAgentDownloadsVerifiesCachesAndRunsNode(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-dl", "")
	reg := a.waitRegistered()
	if reg.GetPlatform() != bins.plat || reg.GetArch() != bins.arch {
		t.Errorf("agent registered as %s/%s, want %s/%s", reg.GetPlatform(), reg.GetArch(), bins.plat, bins.arch)
	}

	st := runNode(a, "node-dl")

	// Cached where the design says, with the master's checksum and metadata.
	want := g.masterChecksum(v100)
	cached := a.cachedBinary(v100)
	if got := fileSHA256(t, cached); got != want {
		t.Errorf("sha256(%s) = %s, want the master's %s", cached, got, want)
	}
	if fi, err := os.Stat(cached); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("cached binary %s: %v, mode %v; want an executable", cached, err, fi.Mode())
	}
	var meta struct {
		Version  string `json:"version"`
		Checksum string `json:"checksum"`
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(cached), "meta.json"))
	if err != nil {
		t.Fatalf("cache metadata: %v", err)
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.Version != v100 || meta.Checksum != want {
		t.Errorf("meta.json = %s (err %v), want version %s checksum %s", b, err, v100, want)
	}
	if partials, _ := filepath.Glob(filepath.Join(filepath.Dir(cached), "*.partial")); len(partials) > 0 {
		t.Errorf("partial downloads left behind: %v", partials)
	}

	// The node runs from the cache entry, reports its version and serves.
	if exe := exePath(int(st.GetPid())); exe != cached {
		t.Errorf("node pid %d runs %q, want the cached %s", st.GetPid(), exe, cached)
	}
	if st.GetVersion() != v100 {
		t.Errorf("master reports node version %q, want %s", st.GetVersion(), v100)
	}
	if v := nodeVersion(t, st.GetEndpoint()); v != v100 {
		t.Errorf("GET /version = %s, want %s", v, v100)
	}
	putKey(t, st.GetEndpoint(), "greeting", "hello grid")
	if got := getKey(t, st.GetEndpoint(), "greeting"); got != "hello grid" {
		t.Errorf("GET /kv/greeting = %q, want %q", got, "hello grid")
	}
	if _, err := os.Stat(filepath.Join(a.nodeDataDir("node-dl"))); err != nil {
		t.Errorf("node data dir: %v", err)
	}
}

// kill -9 of a node: the agent restarts it after a backoff delay, and the
// restart (new pid, restart count) is visible through the master.
func TestKilledNodeIsRestartedWithBackoff(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-crash", "")
	a.waitRegistered()
	st := runNode(a, "node-crash")
	putKey(t, st.GetEndpoint(), "k", "acknowledged before the crash")
	oldPID := int(st.GetPid())

	killed := time.Now()
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, short, "killed node gone", func() (bool, string) { return !alive(oldPID), "alive" })
	// Watch the node's port directly: it must stay down for the backoff
	// delay (1 s minus at most 20 % jitter), then come back.
	var back time.Time
	testproc.WaitFor(t, long, "node serves again after kill -9", func() (bool, string) {
		if healthy(st.GetEndpoint()) {
			back = time.Now()
			return true, ""
		}
		return false, "not healthy"
	})
	if down := back.Sub(killed); down < 700*time.Millisecond {
		t.Errorf("node was back %s after kill -9, want a backoff delay of at least 0.8 s", down)
	}

	after := g.waitRunning("node-crash", func(s *gridv1.NodeStatus) bool {
		return s.GetPid() != int64(oldPID) && s.GetRestartCount() >= 1
	})
	if !strings.Contains(after.GetLastExit(), "killed") {
		t.Errorf("last exit reported %q, want it to say the node was killed", after.GetLastExit())
	}
	if pids := nodeProcesses(a.nodeDataDir("node-crash")); !slices.Equal(pids, []int{int(after.GetPid())}) {
		t.Errorf("processes serving node-crash: %v, want exactly the reported pid %d", pids, after.GetPid())
	}
	if got := getKey(t, after.GetEndpoint(), "k"); got != "acknowledged before the crash" {
		t.Errorf("after restart GET /kv/k = %q, want the write acknowledged before kill -9", got)
	}
	if after.GetEndpoint() != st.GetEndpoint() {
		t.Errorf("endpoint changed across the restart: %s -> %s, want the same port", st.GetEndpoint(), after.GetEndpoint())
	}
	// The supervisor's decision is a logged event with its delay.
	if a.logCount("node-crash", "delay") == 0 {
		t.Errorf("agent log has no restart decision with a delay for node-crash")
	}
}

// A node binary that exits at once is restarted with growing delays
// (measured from the real process starts), and the master sees the node in
// backoff with its restart count, last exit and last log lines.
//
// The default policy gives up (state failed) at the 10th failure within 5
// minutes, i.e. after about 4 minutes of exponential backoff; sutra-agent has
// no knob to shorten it (by design: the defaults must not give up after one
// bad second), so `failed` is asserted by the supervisor's unit tests with an
// injected clock, not here.
func TestCrashingBinaryBacksOff(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	broken := filepath.Join(g.root, "brokenserver")
	copyFile(t, bins.broken, broken, 0o755)
	// Give up after the 5th failure within a minute (the default, 10 within
	// 5 minutes, would take about 4 minutes of backoff to reach).
	a := g.newAgent("agent-broken", broken, "restart_max_failures = 5", "restart_window_secs = 60")
	a.waitRegistered()
	a.spawn("node-broken")

	n := g.waitNode("node-broken", "failed after 5 failures (4 restarts with backoff)", func(n *gridv1.StorageNode) bool {
		st := n.GetStatus()
		return st.GetState() == gridv1.NodeState_NODE_STATE_FAILED
	})
	st := n.GetStatus()
	if st.GetRestartCount() != 4 {
		t.Errorf("restart count when failed = %d, want 4 (5 failures, the 5th gives up)", st.GetRestartCount())
	}
	// Given up: no further start happens.
	before := len(readStarts(t, filepath.Join(a.nodeDataDir("node-broken"), "starts.log")))
	time.Sleep(3 * time.Second)
	if after := len(readStarts(t, filepath.Join(a.nodeDataDir("node-broken"), "starts.log"))); after != before || after != 5 {
		t.Errorf("starts of the failed node: %d, then %d after 3 s; want 5 and no more", before, after)
	}
	if !strings.Contains(st.GetLastExit(), "exit status 1") {
		t.Errorf("last exit = %q, want exit status 1", st.GetLastExit())
	}
	if !slices.ContainsFunc(st.GetLastLogLines(), func(l string) bool { return strings.Contains(l, "broken on purpose") }) {
		t.Errorf("last log lines %q do not include the node's own last words", st.GetLastLogLines())
	}

	// The delays between real starts grow: >= 0.8 s, 1.6 s, 3.2 s (1 s × 2^n minus at most 20 % jitter).
	starts := readStarts(t, filepath.Join(a.nodeDataDir("node-broken"), "starts.log"))
	if len(starts) < 4 {
		t.Fatalf("%d starts recorded, want at least 4 (3 restarts)", len(starts))
	}
	for i := 1; i < 4; i++ {
		gap := starts[i].Sub(starts[i-1])
		want := time.Duration(float64(time.Second<<(i-1)) * 0.8)
		if gap < want-50*time.Millisecond {
			t.Errorf("delay before restart %d = %s, want at least %s (exponential backoff)", i, gap, want)
		}
	}
	if pids := nodeProcesses(a.nodeDataDir("node-broken")); len(pids) > 1 {
		t.Errorf("%d processes for one node: %v", len(pids), pids)
	}
	// The master's cluster summary does not count it as running.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cs, err := g.rpc.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs.GetRunningNodes() != 0 {
		t.Errorf("cluster status reports %d running nodes, want 0", cs.GetRunningNodes())
	}
}

func readStarts(t *testing.T, path string) []time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("starts of the broken node: %v", err)
	}
	var out []time.Time
	for _, f := range strings.Fields(string(b)) {
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, time.Unix(0, ns))
	}
	return out
}

// `sutra nodes stop ID --wait` stops the node gracefully (SIGTERM, exit 0),
// the master hears it stopped, and its data dir is kept: the same node
// spawned again serves the key written before the stop.
func TestCLINodesStopIsGracefulAndKeepsData(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-stop", "")
	a.waitRegistered()
	st := runNode(a, "node-stop")
	putKey(t, st.GetEndpoint(), "kept", "across a stop")
	pid := int(st.GetPid())

	out, code := g.runCLI("nodes", "stop", "node-stop", "--wait", "--wait-timeout", "90s")
	if code != 0 {
		t.Fatalf("sutra nodes stop node-stop --wait: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "node-stop") {
		t.Errorf("sutra nodes stop output %q does not name the node", out)
	}
	testproc.WaitFor(t, short, "stopped node's process gone", func() (bool, string) {
		return !alive(pid), "pid " + strconv.Itoa(pid) + " alive"
	})
	if pids := nodeProcesses(a.nodeDataDir("node-stop")); len(pids) != 0 {
		t.Errorf("processes still serving the stopped node: %v", pids)
	}
	// Reported to the master as stopped by its agent.
	testproc.WaitFor(t, short, "NodeStopped event at the master", func() (bool, string) {
		evs := g.events()
		return slices.ContainsFunc(evs, func(e event) bool { return e.Type == "NodeStopped" && e.NodeID == "node-stop" }),
			strconv.Itoa(len(evs)) + " events"
	})
	// Graceful: the supervisor saw a clean exit, not a SIGKILL after the grace.
	if n := a.logCount("node-stop", `exit="exit status 0"`); n == 0 {
		t.Errorf("agent log has no clean exit (exit status 0) of node-stop; the stop was not graceful:\n%s", testproc.Tail(a.logPath, 20))
	}
	if _, err := os.Stat(filepath.Join(a.nodeDataDir("node-stop"))); err != nil {
		t.Fatalf("data dir of the stopped node: %v", err)
	}

	// The same node again: same port, same data.
	again := runNode(a, "node-stop")
	if again.GetEndpoint() != st.GetEndpoint() {
		t.Errorf("endpoint after re-spawn = %s, want the node's stable %s", again.GetEndpoint(), st.GetEndpoint())
	}
	if got := getKey(t, again.GetEndpoint(), "kept"); got != "across a stop" {
		t.Errorf("GET /kv/kept after stop and re-spawn = %q, want %q", got, "across a stop")
	}
}

// The agent killed with SIGKILL and started again re-adopts its running
// node (same pid, restart count unchanged) instead of starting a duplicate.
func TestAgentRestartReadoptsNode(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-adopt", "")
	a.waitRegistered()
	st := runNode(a, "node-adopt")
	putKey(t, st.GetEndpoint(), "k", "v")
	pid := int(st.GetPid())

	firstPID := a.proc.PID()
	a.kill9()
	if !alive(pid) || !healthy(st.GetEndpoint()) {
		t.Fatalf("node pid %d died with its agent; nodes must run in their own process group", pid)
	}
	a.start()
	if a.proc.PID() == firstPID {
		t.Fatal("agent was not restarted")
	}
	testproc.WaitFor(t, long, "agent log says the node was re-adopted", func() (bool, string) {
		return a.logCount("re-adopted running node", "node-adopt") == 1, testproc.Tail(a.logPath, 5)
	})
	// The master hears from the new agent process (a heartbeat after the
	// restart) and still sees the same pid.
	restarted := time.Now().Unix()
	ag := g.waitAgent(a.id, "heartbeating again after the restart", func(ag *gridv1.Agent) bool {
		return ag.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY && ag.GetLastHeartbeatUnix() > restarted
	})
	_ = ag
	after := g.waitRunning("node-adopt")
	if int(after.GetPid()) != pid {
		t.Errorf("node pid after agent restart = %d, want the re-adopted %d", after.GetPid(), pid)
	}
	if after.GetRestartCount() != st.GetRestartCount() {
		t.Errorf("restart count %d -> %d across an agent restart, want unchanged", st.GetRestartCount(), after.GetRestartCount())
	}
	if pids := nodeProcesses(a.nodeDataDir("node-adopt")); !slices.Equal(pids, []int{pid}) {
		t.Errorf("processes serving node-adopt: %v, want only the re-adopted %d", pids, pid)
	}
	if n := a.logCount("starting node", "node-adopt"); n != 1 {
		t.Errorf("agent started node-adopt %d times across both runs, want 1", n)
	}
	if got := getKey(t, after.GetEndpoint(), "k"); got != "v" {
		t.Errorf("GET /kv/k = %q after the agent restart, want v", got)
	}

	// The re-adopted node is still supervised: kill -9 brings it back.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g.waitRunning("node-adopt", func(s *gridv1.NodeStatus) bool { return int(s.GetPid()) != pid })
}

// The master killed: nodes keep serving and the agent keeps them; the
// master restarted on the same ports and data dir: the agent reconnects and
// the desired nodes are unchanged.
func TestMasterDownNodesKeepServing(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-nomaster", "")
	a.waitRegistered()
	st := runNode(a, "node-nomaster")
	putKey(t, st.GetEndpoint(), "before", "1")
	before := g.waitAgent(a.id, "desired state applied", func(ag *gridv1.Agent) bool {
		return ag.GetAppliedGeneration() == ag.GetDesired().GetGeneration()
	})

	g.killMaster()
	testproc.WaitFor(t, long, "agent notices the master is gone", func() (bool, string) {
		return a.logCount("heartbeat failed") > 0, testproc.Tail(a.logPath, 3)
	})
	if !healthy(st.GetEndpoint()) {
		t.Fatal("node stopped serving when the master went away")
	}
	putKey(t, st.GetEndpoint(), "during", "2")
	if got := getKey(t, st.GetEndpoint(), "before"); got != "1" {
		t.Errorf("GET /kv/before with the master down = %q, want 1", got)
	}

	downAt := time.Now().Unix()
	g.startMaster()
	ag := g.waitAgent(a.id, "heartbeating again after the master restart", func(ag *gridv1.Agent) bool {
		return ag.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY && ag.GetLastHeartbeatUnix() >= downAt
	})
	if ag.GetDesired().GetGeneration() != before.GetDesired().GetGeneration() ||
		len(ag.GetDesired().GetNodes()) != 1 || ag.GetDesired().GetNodes()[0].GetNodeId() != "node-nomaster" {
		t.Errorf("desired state after the master restart = %v, want unchanged %v", ag.GetDesired(), before.GetDesired())
	}
	after := g.waitRunning("node-nomaster")
	if after.GetPid() != st.GetPid() || after.GetRestartCount() != st.GetRestartCount() {
		t.Errorf("node after the master restart: pid %d restarts %d, want untouched pid %d restarts %d",
			after.GetPid(), after.GetRestartCount(), st.GetPid(), st.GetRestartCount())
	}
	if a.logCount("master reachable again")+a.logCount("registered with master") < 2 {
		t.Errorf("agent log does not show it reconnected:\n%s", testproc.Tail(a.logPath, 10))
	}
	if got := getKey(t, after.GetEndpoint(), "during"); got != "2" {
		t.Errorf("GET /kv/during = %q, want 2", got)
	}
}

// A cached binary changed on disk is detected before the next start (its
// checksum is checked), deleted, fetched again, and the node runs again from
// a cache entry with the right checksum.
func TestCorruptCachedBinaryIsRefetched(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-corrupt", "")
	a.waitRegistered()
	st := runNode(a, "node-corrupt")
	want := g.masterChecksum(v100)
	cached := a.cachedBinary(v100)

	// Corrupt the cache entry. A running executable cannot be written to
	// (ETXTBSY), so the bad copy replaces it by rename, as a disk restore or a
	// careless operator would; it still runs (a flipped byte in the padding
	// of the file's end), so executing it unverified would go unnoticed.
	b, err := os.ReadFile(cached)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	tmp := cached + ".corrupt"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cached); err != nil {
		t.Fatal(err)
	}
	if fileSHA256(t, cached) == want {
		t.Fatal("corruption did not change the checksum")
	}

	if err := syscall.Kill(int(st.GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	after := g.waitRunning("node-corrupt", func(s *gridv1.NodeStatus) bool { return s.GetPid() != st.GetPid() })
	if got := fileSHA256(t, cached); got != want {
		t.Errorf("cache entry after recovery: sha256 %s, want the master's %s", got, want)
	}
	exe := exePath(int(after.GetPid()))
	if exe != cached {
		t.Errorf("restarted node runs %q, want %s", exe, cached)
	}
	if got := fileSHA256(t, "/proc/"+strconv.Itoa(int(after.GetPid()))+"/exe"); got != want {
		t.Errorf("restarted node's executable has sha256 %s, want %s", got, want)
	}
	if a.logCount("failed verification before start") == 0 {
		t.Errorf("agent log does not report the corrupt cache entry:\n%s", testproc.Tail(a.logPath, 20))
	}
	if n := a.logCount("storage-server binary ready", "version="+v100); n < 2 {
		t.Errorf("storage-server %s became ready %d times, want a second time after the re-fetch", v100, n)
	}
}
