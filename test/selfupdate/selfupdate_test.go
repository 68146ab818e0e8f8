//go:build linux

package selfupdate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/sutragrid/sutra/agent/upgrade"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

const (
	agentID = "su-agent"
	nodeID  = "su-node-1"
	// window is the agent's upgrade_window_secs: long enough for a new agent
	// on a loaded machine to start, register and heartbeat (the master's
	// heartbeat interval is 5 s), short enough to keep the test near a minute.
	window = 20 * time.Second
	// guardGrace is agent/upgrade's default GuardGrace: the guard restores
	// the previous binary this long after the deadline.
	guardGrace = 10 * time.Second
	// waitLong bounds every wait for a condition (generous: a loaded 2-core machine).
	waitLong = 90 * time.Second
	// restartDelay stands in for systemd's RestartSec.
	restartDelay = 500 * time.Millisecond
	// maxStarts bounds the restart loop (a crash-looping binary).
	maxStarts = 200
)

// bins are the binaries TestMain builds, by name.
var bins = map[string]string{}

const versionVar = "github.com/sutragrid/sutra/internal/version.Version"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "selfupdate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builds := []struct{ name, version, pkg string }{
		{"sutra-master", "1.0.0", "./cmd/sutra-master"},
		{"storage-server", "1.0.0", "./cmd/storage-server"},
		{"sutra-agent-1.0.0", "1.0.0", "./cmd/sutra-agent"},
		{"sutra-agent-1.1.0", "1.1.0", "./cmd/sutra-agent"},
		{"sutra-agent-1.2.0", "1.2.0", "./test/selfupdate/testdata/brokenagent"},
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	for _, b := range builds {
		out := filepath.Join(dir, b.name)
		cmd := exec.Command(gobin, "build", "-o", out, "-ldflags", "-X "+versionVar+"="+b.version, b.pkg)
		cmd.Dir = filepath.Join("..", "..")
		if msg, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, msg)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		bins[b.name] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestAgentSelfUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end self-update with real binaries takes about 90 s; run without -short")
	}
	plat, arch, err := platform.Current()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	binDir := filepath.Join(root, "binaries")
	mkdir(t, binDir)
	publish(t, binDir, bins["storage-server"], "storage-server-1.0.0-"+plat+"-"+arch)
	publish(t, binDir, bins["sutra-agent-1.1.0"], "sutra-agent-1.1.0-"+plat+"-"+arch)
	m := startMaster(t, binDir, filepath.Join(root, "master"))
	ctx := context.Background()

	// The agent runs from its own copy, which self-update replaces in place.
	agentDir := filepath.Join(root, "agent")
	mkdir(t, agentDir)
	exe := filepath.Join(agentDir, "sutra-agent")
	copyFile(t, bins["sutra-agent-1.0.0"], exe)
	dataDir := filepath.Join(agentDir, "data")
	cfg := filepath.Join(agentDir, "agent-config.toml")
	writeFile(t, cfg, fmt.Sprintf(`version = 1
[agent]
agent_id = %q
master_host = %q
join_token = %q
cache_dir = %q
agent_data_dir = %q
upgrade_window_secs = %d
[storage]
master_binary_url = %q
data_path = %q
port_range_start = %s
[monitoring]
heartbeat_interval_secs = 1
[logging]
level = "debug"
`, agentID, m.grpcAddr, m.joinToken, filepath.Join(agentDir, "cache"), dataDir, int(window/time.Second),
		"http://"+m.httpAddr, filepath.Join(agentDir, "nodes"), port(freeAddr(t))))

	// Runs after the loop has stopped the agent (which stops its node).
	var pid int
	t.Cleanup(func() {
		killGuard(t, dataDir)
		if pid != 0 && killIf(pid, "storage-server") {
			t.Logf("killed node pid %d left running", pid)
		}
	})
	svc := startLoop(t, exe, cfg, filepath.Join(root, "agent.log"))
	m.loop = svc
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nrestart loop: %s\nagent log (tail):\n%s", append(args, svc.summary(), tail(svc.log(), 60))...)
	}

	// 1.0.0 registers; a node runs on it.
	start := time.Now()
	m.waitAgent(t, fail, "1.0.0 registered and healthy", func(a *gridv1.Agent) bool {
		return a.GetAgentVersion() == "1.0.0" && a.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY
	})
	t.Logf("agent 1.0.0 registered after %v", time.Since(start).Round(10*time.Millisecond))
	start = time.Now()
	if _, err := m.grid.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: agentID, NodeId: nodeID}); err != nil {
		t.Fatal(err)
	}
	pid = m.waitNode(t, fail, "running", 0)
	t.Logf("node %s running with pid %d after %v", nodeID, pid, time.Since(start).Round(10*time.Millisecond))

	// 1.0.0 → 1.1.0: applied, exit 3, restarted, committed; the node is untouched.
	start = time.Now()
	if _, err := m.grid.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: agentID, AgentVersion: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	a := m.waitAgent(t, fail, "1.1.0 committed", func(a *gridv1.Agent) bool {
		return a.GetAgentVersion() == "1.1.0" && a.GetUpgrade().GetPhase() == "committed"
	})
	t.Logf("agent 1.0.0 -> 1.1.0 committed after %v: %s", time.Since(start).Round(10*time.Millisecond), a.GetUpgrade().GetMessage())
	if u := a.GetUpgrade(); u.GetFromVersion() != "1.0.0" || u.GetToVersion() != "1.1.0" {
		fail("upgrade reported %s -> %s, want 1.0.0 -> 1.1.0", u.GetFromVersion(), u.GetToVersion())
	}
	if got := m.waitNode(t, fail, "running", pid); got != pid {
		fail("node pid after the upgrade to 1.1.0 = %d, want %d (kept)", got, pid)
	}
	if got := hashFile(t, exe); got != hashFile(t, bins["sutra-agent-1.1.0"]) {
		fail("%s is not the 1.1.0 build after the upgrade", exe)
	}
	if n := svc.exits(3); n != 1 {
		fail("the agent exited %d times with status 3 (restart for the new binary), want 1", n)
	}
	m.waitLogged(t, fail, "re-adopted running node", "pid="+strconv.Itoa(pid)+" ")

	// 1.1.0 → broken 1.2.0: it passes --version, is applied, crash-loops
	// under the restart loop. A simulated reboot kills the guard (and the
	// agent) with SIGKILL as soon as it runs, so what restores 1.1.0 is the
	// pre-start check the loop runs from the kept previous binary, like the
	// systemd unit's ExecStartPre.
	publish(t, binDir, bins["sutra-agent-1.2.0"], "sutra-agent-1.2.0-"+plat+"-"+arch)
	m.waitArtifact(t, fail, "sutra-agent", "1.2.0", plat, arch)
	start = time.Now()
	if _, err := m.grid.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: agentID, AgentVersion: "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	reboot := time.Now().Add(waitLong)
	for {
		st, err := upgrade.ReadState(dataDir)
		if err == nil && st.ToVersion == "1.2.0" && st.GuardPID != 0 {
			if !killIf(st.GuardPID, upgrade.GuardCommand) && st.Phase == upgrade.PhaseWatching {
				fail("the upgrade guard pid %d is not running while 1.2.0 is on probation", st.GuardPID)
			}
			if p := svc.pid(); p != 0 {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Logf("simulated reboot: guard pid %d and the agent killed (phase %s)", st.GuardPID, st.Phase)
			break
		}
		if time.Now().After(reboot) {
			fail("no upgrade guard recorded for 1.2.0 within %v (state %+v, err %v)", waitLong, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a = m.waitAgent(t, fail, "rolled back from 1.2.0 to 1.1.0", func(a *gridv1.Agent) bool {
		return a.GetAgentVersion() == "1.1.0" && a.GetUpgrade().GetPhase() == "rolled_back" &&
			a.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY
	})
	t.Logf("agent 1.1.0 -> 1.2.0 rolled back after %v (the guard, killed, would have acted after window %v + grace %v): %s",
		time.Since(start).Round(10*time.Millisecond), window, guardGrace, a.GetUpgrade().GetMessage())
	if u := a.GetUpgrade(); u.GetFromVersion() != "1.1.0" || u.GetToVersion() != "1.2.0" {
		fail("rollback reported as %s -> %s, want 1.1.0 -> 1.2.0", u.GetFromVersion(), u.GetToVersion())
	}
	if !strings.Contains(a.GetUpgrade().GetMessage(), "pre-start check") {
		fail("rollback message %q, want it done by the pre-start check (the guard was killed)", a.GetUpgrade().GetMessage())
	}
	if len(a.GetUpgrade().GetLastLogLines()) == 0 {
		fail("rollback reported without the agent's last log lines (agent.log tail)")
	}
	if n := svc.exits(1); n == 0 {
		fail("the broken 1.2.0 never ran (no start exited with status 1): the rollback was not exercised")
	}
	if got := hashFile(t, exe); got != hashFile(t, bins["sutra-agent-1.1.0"]) {
		fail("%s is not the 1.1.0 build after the rollback", exe)
	}
	if got := m.waitNode(t, fail, "running", pid); got != pid {
		fail("node pid after the rollback = %d, want %d (kept)", got, pid)
	}
	if st, err := upgrade.ReadState(dataDir); err != nil || !contains(st.FailedVersions, "1.2.0") {
		fail("upgrade state after the rollback: failed versions %v (err %v), want 1.2.0 recorded", st.FailedVersions, err)
	}

	// Not retried: for a whole probation window the agent keeps running
	// 1.1.0 with the same pid, the desired 1.2.0 notwithstanding (a retry
	// would apply within a reconcile interval, 2 s, and exit at once).
	starts, agentPID := svc.count(), svc.pid()
	watchUntil := time.Now().Add(window)
	for time.Now().Before(watchUntil) {
		if n := svc.count(); n != starts {
			fail("the agent was started again (%d starts, had %d) while 1.2.0 is desired after its rollback: retried?", n, starts)
		}
		a, err := m.grid.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: agentID})
		if err != nil {
			fail("GetAgent: %v", err)
		}
		if a.GetAgentVersion() != "1.1.0" || a.GetUpgrade().GetPhase() != "rolled_back" || a.GetUpgrade().GetToVersion() != "1.2.0" {
			fail("after the rollback the master shows agent %s upgrade %s -> %s (%s), want 1.1.0 rolled_back from 1.2.0",
				a.GetAgentVersion(), a.GetUpgrade().GetPhase(), a.GetUpgrade().GetToVersion(), a.GetUpgrade().GetMessage())
		}
		time.Sleep(time.Second)
	}
	if got := svc.pid(); got != agentPID {
		fail("agent pid changed from %d to %d while watching for a retry", agentPID, got)
	}
	if got := m.waitNode(t, fail, "running", pid); got != pid {
		fail("node pid at the end = %d, want %d", got, pid)
	}
	t.Logf("1.2.0 not retried for %v; restart loop: %s", window, svc.summary())
}

// master is a real sutra-master on loopback.
type master struct {
	grpcAddr, httpAddr string
	joinToken          string // enrolls the test's agent
	grid               gridv1.GridMasterClient
	loop               *loop
}

func startMaster(t *testing.T, binDir, dataDir string) *master {
	t.Helper()
	m := &master{grpcAddr: freeAddr(t), httpAddr: freeAddr(t)}
	var out bytes.Buffer
	cmd := exec.Command(bins["sutra-master"])
	cmd.Env = append(os.Environ(), "BIND_ADDRESS=127.0.0.1", "GRPC_PORT="+port(m.grpcAddr), "HTTP_PORT="+port(m.httpAddr),
		"BINARIES_DIR="+binDir, "SUTRA_DATA_DIR="+dataDir)
	lw := &lockedWriter{w: &out}
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sutra-master: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sutra-master output (tail):\n%s", tail(out.String(), 30))
		}
	})
	// The master writes the operator's credentials before it serves.
	var creds opauth.Credentials
	deadline := time.Now().Add(waitLong)
	for {
		var err error
		if creds, err = opauth.Load(dataDir); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master's operator credentials: %v\n%s", err, tail(out.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := creds.Dial(m.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m.grid = gridv1.NewGridMasterClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	jt, err := m.grid.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{Uses: 1, TtlSecs: 3600}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("create a join token: %v", err)
	}
	m.joinToken = jt.GetToken()
	return m
}

// waitAgent polls GetAgent until ok holds and returns the agent.
func (m *master) waitAgent(t *testing.T, fail func(string, ...any), what string, ok func(*gridv1.Agent) bool) *gridv1.Agent {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var last *gridv1.Agent
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a, err := m.grid.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: agentID})
		cancel()
		if err == nil && ok(a) {
			return a
		}
		if err == nil {
			last = a
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	fail("agent not %s within %v: last agent_version %q health %s upgrade %v (err %v)", what, waitLong,
		last.GetAgentVersion(), last.GetHealth(), last.GetUpgrade(), lastErr)
	return nil
}

// waitNode polls the node until it is in state (and has pid want, when not
// 0) and returns its pid.
func (m *master) waitNode(t *testing.T, fail func(string, ...any), state string, want int) int {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var last *gridv1.StorageNode
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := m.grid.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: nodeID})
		cancel()
		if err == nil {
			last = n
			s := n.GetStatus()
			if strings.EqualFold(strings.TrimPrefix(s.GetState().String(), "NODE_STATE_"), state) && s.GetPid() != 0 &&
				(want == 0 || int(s.GetPid()) == want) {
				if err := syscall.Kill(int(s.GetPid()), 0); err != nil {
					fail("the master reports node pid %d, but no such process: %v", s.GetPid(), err)
				}
				return int(s.GetPid())
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	fail("node %s not %s (pid %d) within %v: last %v", nodeID, state, want, waitLong, last.GetStatus())
	return 0
}

// waitArtifact waits until the master's binary API lists an artifact version.
func (m *master) waitArtifact(t *testing.T, fail func(string, ...any), artifact, version, plat, arch string) {
	t.Helper()
	url := fmt.Sprintf("http://%s/api/artifacts/%s/%s/%s/%s", m.httpAddr, artifact, version, plat, arch)
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	fail("the master does not serve %s within %v", url, waitLong)
}

// waitLogged waits until a line of the agent's log contains every part.
func (m *master) waitLogged(t *testing.T, fail func(string, ...any), parts ...string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(m.loop.log(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	fail("the agent did not log a line with %q within %v", parts, waitLong)
}

// loop restarts the agent whenever it exits, like systemd's Restart=always
// with a short RestartSec, at most maxStarts times.
type loop struct {
	exe, cfg string
	logPath  string

	mu      sync.Mutex
	stopped bool
	cur     *exec.Cmd
	starts  []run
	done    chan struct{}
}

type run struct {
	pid  int
	exit int // -2 while running, -1 killed by a signal
}

func startLoop(t *testing.T, exe, cfg, logPath string) *loop {
	t.Helper()
	l := &loop{exe: exe, cfg: cfg, logPath: logPath, done: make(chan struct{})}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	go l.run(logf)
	t.Cleanup(func() { l.stop(t); logf.Close() })
	return l
}

func (l *loop) run(logf *os.File) {
	defer close(l.done)
	for i := 0; i < maxStarts; i++ {
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		// systemd's "ExecStartPre=-<exe>.previous upgrade-check --config F":
		// a missing binary or a failing check is ignored.
		if prev := l.exe + ".previous"; fileExists(prev) {
			pre := exec.Command(prev, upgrade.CheckCommand, "--config", l.cfg)
			pre.Stdout, pre.Stderr = logf, logf
			if err := pre.Run(); err != nil {
				fmt.Fprintf(logf, "restart loop: pre-start check: %v (ignored)\n", err)
			}
		}
		cmd := exec.Command(l.exe, "run", "--config", l.cfg)
		cmd.Stdout, cmd.Stderr = logf, logf
		err := cmd.Start()
		if err == nil {
			l.cur = cmd
			l.starts = append(l.starts, run{pid: cmd.Process.Pid, exit: -2})
		}
		l.mu.Unlock()
		if err != nil {
			fmt.Fprintf(logf, "restart loop: start %s: %v\n", l.exe, err)
		} else {
			err = cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			l.mu.Lock()
			l.starts[len(l.starts)-1].exit = code
			l.cur = nil
			l.mu.Unlock()
			fmt.Fprintf(logf, "restart loop: pid %d exited with %d\n", cmd.Process.Pid, code)
		}
		time.Sleep(restartDelay)
	}
	fmt.Fprintf(logf, "restart loop: gave up after %d starts\n", maxStarts)
}

// stop ends the loop and the running agent (SIGTERM, then SIGKILL).
func (l *loop) stop(t *testing.T) {
	l.mu.Lock()
	l.stopped = true
	if l.cur != nil {
		_ = l.cur.Process.Signal(syscall.SIGTERM)
	}
	cur := l.cur
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-time.After(30 * time.Second):
		t.Logf("agent did not stop within 30 s of SIGTERM: killing it")
		if cur != nil {
			_ = cur.Process.Kill()
		}
		<-l.done
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (l *loop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.starts)
}

// pid is the running agent's pid (0 between runs).
func (l *loop) pid() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return 0
	}
	return l.cur.Process.Pid
}

// exits counts the runs that ended with code.
func (l *loop) exits(code int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.starts {
		if r.exit == code {
			n++
		}
	}
	return n
}

func (l *loop) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	codes := map[int]int{}
	for _, r := range l.starts {
		codes[r.exit]++
	}
	return fmt.Sprintf("%d starts, exit codes %v (-2 running)", len(l.starts), codes)
}

func (l *loop) log() string {
	b, _ := os.ReadFile(l.logPath)
	return string(b)
}

// killGuard kills an upgrade guard still running when the test ends.
func killGuard(t *testing.T, dataDir string) {
	st, err := upgrade.ReadState(dataDir)
	if err != nil || st.GuardPID == 0 {
		return
	}
	if killIf(st.GuardPID, upgrade.GuardCommand) {
		t.Logf("killed upgrade guard pid %d left running", st.GuardPID)
	}
}

// killIf SIGKILLs pid when its command line contains what (so that a reused
// pid is left alone) and reports whether it did.
func killIf(pid int, what string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(b, []byte(what)) {
		return false
	}
	return syscall.Kill(pid, syscall.SIGKILL) == nil
}

// publish puts a binary into the master's BINARIES_DIR under name: written
// under a name the master ignores, then renamed, so it never sees half a file.
func publish(t *testing.T, dir, from, name string) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+name)
	copyFile(t, from, tmp)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func hashFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lockedWriter serialises writes from a child's stdout and stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
