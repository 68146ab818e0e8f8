//go:build linux

package agentsvc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testutil"
)

// The real-systemd integration test boots Debian bookworm with systemd under
// systemd-nspawn (rootfs prepared and cached by test/systemd/rootfs.sh),
// installs the agent as a service inside and checks what systemd does with
// it. It needs root and is slow the first time (debootstrap), so it runs only
// with SUTRA_SYSTEMD_IT=1 (CI sets it).
//
// By default (realAgentDefault) it installs the real cmd/sutra-agent with
// service install --join-token, starts a real sutra-master on the host's
// loopback (the container shares the host's network) with --http-tls and
// --private-downloads, so the agent downloads over HTTPS with the identity
// it enrolled for, spawns a storage node on the agent with the sutra CLI and checks
// that the node keeps its pid (re-adopted) across kill -9 and service restart.
// SUTRA_IT_REAL_AGENT=0 installs the stand-in in testdata/standin instead
// (wired to this package as cmd/sutra-agent is), which needs no master.
const (
	itEnv      = "SUTRA_SYSTEMD_IT"
	realEnv    = "SUTRA_IT_REAL_AGENT"
	agentBin   = "/usr/local/bin/sutra-agent"
	agentConf  = "/etc/sutra/agent-config.toml"
	unitPath   = "/etc/systemd/system/sutra-agent.service"
	itAgentID  = "it-agent"
	itWaitLong = 120 * time.Second
	// itTokenFile is where install --join-token leaves the token.
	itTokenFile = "/var/lib/sutra/agent/join-token"
)

// realAgentDefault: install the real agent unless SUTRA_IT_REAL_AGENT=0.
var realAgentDefault = true

// itVersion is the version stamped into the binaries the real path builds;
// brokenVersion is a sutra-agent release that crashes at start-up.
const (
	itVersion     = "1.0.0"
	brokenVersion = "1.2.0"
	// itUpgradeWindow is the agent's upgrade_window_secs: long enough for a
	// release crash-looping every RestartSec to exhaust the unit's start limit
	// before the upgrade guard rolls it back (window + 10 s grace).
	itUpgradeWindow = 25 * time.Second
)

func TestSystemdIntegration(t *testing.T) {
	if os.Getenv(itEnv) != "1" {
		t.Skipf("real-systemd integration test: set %s=1 (needs root, debootstrap, systemd-nspawn)", itEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not root: the test boots a container with systemd-nspawn", itEnv)
	}
	real := os.Getenv(realEnv) == "1" || (realAgentDefault && os.Getenv(realEnv) != "0")
	host := t.TempDir()
	bins := filepath.Join(host, "bin")

	var master *hostMaster
	var joinToken string // the real agent's, given to service install --join-token
	if real {
		goBuild(t, bins, testutil.VersionFlag(itVersion),
			"./cmd/sutra-agent", "./cmd/sutra-master", "./cmd/storage-server", "./cmd/sutra")
		// A release that passes "--version" but crashes at start-up.
		goBuild(t, bins, testutil.VersionFlag(brokenVersion), "./test/selfupdate/testdata/brokenagent")
		master = startHostMaster(t, bins)
		// Fixed directories (no HOME under systemd); the first node port is a
		// free one of the host's, whose network the container shares. No
		// join_token in the config: service install --join-token brings it.
		joinToken = master.joinToken(t, filepath.Join(bins, "sutra"))
		writeFile(t, filepath.Join(host, "agent-config.toml"), fmt.Sprintf(
			"version = 1\n[agent]\nagent_id = %q\nmaster_host = %q\ncache_dir = \"/var/cache/sutra\"\nagent_data_dir = \"/var/lib/sutra/agent\"\n"+
				"upgrade_window_secs = "+strconv.Itoa(int(itUpgradeWindow/time.Second))+"\n"+
				"[storage]\nmaster_binary_url = %q\ndata_path = \"/var/lib/sutra/nodes\"\nport_range_start = %s\n"+
				"[monitoring]\nheartbeat_interval_secs = 1\n",
			itAgentID, master.grpcAddr, "https://"+master.httpAddr, portOf(testutil.FreeAddr(t))))
		copyFile(t, filepath.Join(bins, "sutra-agent"), filepath.Join(host, "sutra-agent"))
	} else {
		goBuild(t, bins, "", "./agent/service/testdata/standin")
		copyFile(t, filepath.Join(bins, "standin"), filepath.Join(host, "sutra-agent"))
		writeFile(t, filepath.Join(host, "agent-config.toml"), "version = 1\n")
	}

	c := bootContainer(t, host)
	c.mustRun(t, "mkdir", "-p", "/etc/sutra")
	c.mustRun(t, "install", "-m", "0755", "/opt/sutra-it/sutra-agent", agentBin)
	c.mustRun(t, "install", "-m", "0644", "/opt/sutra-it/agent-config.toml", agentConf)

	// A user without root gets the one-line hint.
	out, code := c.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", agentBin, "service", "install", "--config", agentConf)
	if want := "sutra-agent: permission denied: rerun as root (sudo sutra-agent service install)\n"; code != ExitError || out != want {
		t.Errorf("unprivileged install = exit %d %q, want exit 1 %q", code, out, want)
	}

	c.status(t, StateNotInstalled)
	if real {
		// Zero-touch: one command on a fresh node. The token goes to
		// {agent_data_dir}/join-token (0600), not into the unit.
		c.mustRun(t, agentBin, "service", "install", "--config", agentConf, "--join-token", joinToken)
		if got := strings.TrimSpace(c.mustRun(t, "stat", "-c", "%a", itTokenFile)); got != "600" {
			t.Errorf("%s mode %s, want 600", itTokenFile, got)
		}
		secret := joinToken[strings.LastIndex(joinToken, ".")+1:]
		for _, where := range [][]string{{"systemctl", "show", "sutra-agent"}, {"cat", unitPath}, {"cat", agentConf}} {
			if out := c.mustRun(t, where...); strings.Contains(out, secret) {
				t.Errorf("the join token's secret is in %s", strings.Join(where, " "))
			}
		}
	} else {
		c.mustRun(t, agentBin, "service", "install", "--config", agentConf)
	}
	// What systemd got is exactly our rendered unit, and it reads it as meant.
	wantUnit, err := renderSystemd(Definition{Executable: agentBin, ConfigPath: agentConf})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.mustRun(t, "cat", unitPath); got != wantUnit {
		t.Errorf("installed unit differs from the rendered one:\n--- installed ---\n%s\n--- rendered ---\n%s", got, wantUnit)
	}
	props := c.mustRun(t, "systemctl", "show", "sutra-agent", "-p", "Restart,RestartUSec,KillMode,StartLimitBurst,StartLimitIntervalUSec,UnitFileState,NoNewPrivileges")
	for _, want := range []string{"Restart=always", "RestartUSec=2s", "KillMode=process", "StartLimitBurst=10", "StartLimitIntervalUSec=2min", "UnitFileState=enabled", "NoNewPrivileges=yes"} {
		if !strings.Contains(props, want+"\n") {
			t.Errorf("systemctl show sutra-agent lacks %s:\n%s", want, props)
		}
	}
	// systemd complains in the journal about keys it does not understand.
	journal, _ := c.run("journalctl", "-b", "--no-pager", "-o", "cat")
	for _, line := range strings.Split(journal, "\n") {
		if strings.Contains(line, unitPath) || strings.Contains(line, "sutra-agent.service:") {
			if strings.Contains(line, "Unknown") || strings.Contains(line, "gnoring") || strings.Contains(line, "nvalid") {
				t.Errorf("systemd about our unit: %s", line)
			}
		}
	}
	c.status(t, StateStopped)
	if out, code := c.run(agentBin, "service", "install", "--config", agentConf); code != ExitError || !strings.Contains(out, "already installed") {
		t.Errorf("second install = exit %d %q, want exit 1 already installed", code, out)
	}

	c.mustRun(t, agentBin, "service", "start")
	pid1 := c.waitMainPID(t, 0)
	c.status(t, StateRunning)
	// Right after the fork the cmdline may still be systemd's or empty.
	want := strings.Join([]string{agentBin, "run", "--config", agentConf, ServiceFlag}, "\x00") + "\x00"
	cmdline := ""
	for deadline := time.Now().Add(itWaitLong); cmdline != want && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		cmdline = c.mustRun(t, "cat", fmt.Sprintf("/proc/%d/cmdline", pid1))
	}
	if cmdline != want {
		t.Errorf("MainPID %d runs %q, want %q", pid1, cmdline, want)
	}

	var nodes func() []int // the pids that must survive agent restarts
	if real {
		start := time.Now()
		master.waitRegistered(t, itAgentID)
		t.Logf("agent registered and healthy %v after start", time.Since(start).Round(10*time.Millisecond))
		// Enrolled: the token file is gone, the identity is in tls/.
		if out, code := c.run("test", "-e", itTokenFile); code == 0 {
			t.Errorf("%s still exists after the agent enrolled: %s", itTokenFile, out)
		}
		c.mustRun(t, "test", "-s", "/var/lib/sutra/agent/tls/agent.crt")
		// The operator's way: the sutra CLI on the host asks the master for a
		// node on this agent and waits until the agent runs it.
		start = time.Now()
		out, err := master.sutra(t, filepath.Join(bins, "sutra"), "nodes", "spawn", "--agent", itAgentID, "--node-id", "it-node-1", "--wait", "--wait-timeout", itWaitLong.String())
		if err != nil {
			journal, _ := c.run("journalctl", "-u", "sutra-agent", "--no-pager", "-n", "60")
			t.Fatalf("sutra nodes spawn --wait: %v\n%s\n%s", err, out, journal)
		}
		t.Logf("node running %v after spawn (download, verify, start, health): %s", time.Since(start).Round(10*time.Millisecond), strings.TrimSpace(out))
		nodes = func() []int { return master.nodePIDs(t, itAgentID) }
		if len(nodes()) == 0 {
			t.Fatalf("the master reports no running node pid for %s after spawn --wait", itAgentID)
		}
	} else {
		if got := strings.TrimSpace(c.waitFile(t, "/run/sutra-standin/interactive")); got != "false" {
			t.Errorf("under systemd agentsvc.Interactive() = %s, want false", got)
		}
		nodes = func() []int { return []int{atoi(t, c.waitFile(t, "/run/sutra-standin/child.pid"))} }
	}
	before := nodes()

	// kill -9: systemd restarts it after RestartSec.
	killed := time.Now()
	c.mustRun(t, "sh", "-c", "kill -9 "+strconv.Itoa(pid1)) // no procps in minbase: the shell builtin
	pid2 := c.waitMainPID(t, pid1)
	t.Logf("systemd restarted the agent %v after kill -9 (pid %d -> %d)", time.Since(killed).Round(10*time.Millisecond), pid1, pid2)
	c.status(t, StateRunning)
	c.requireAlive(t, before, "after kill -9 of the agent")
	if real {
		c.waitReadopted(t, pid2, before)
		master.waitNodePIDs(t, itAgentID, before, "after kill -9 of the agent")
	}

	// service restart: the agent alone restarts, its nodes keep their pids.
	c.mustRun(t, agentBin, "service", "restart")
	pid3 := c.waitMainPID(t, pid2)
	c.requireAlive(t, before, "after service restart")
	if real {
		c.waitReadopted(t, pid3, before)
		master.waitNodePIDs(t, itAgentID, before, "after service restart")
	} else {
		if got := atoi(t, c.waitFile(t, "/run/sutra-standin/adopted")); got != before[0] {
			t.Errorf("restarted agent adopted pid %d, want %d", got, before[0])
		}
	}
	if after := nodes(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("node pids after restart %v, want %v", after, before)
	}
	t.Logf("service restart: agent pid %d -> %d, node pids %v kept", pid2, pid3, before)

	if real {
		brokenUpgrade(t, c, master, bins, before)
	}

	c.mustRun(t, agentBin, "service", "stop")
	c.status(t, StateStopped)
	c.mustRun(t, agentBin, "service", "start")
	c.waitMainPID(t, 0)
	// Uninstall stops the running agent and leaves no unit behind.
	c.mustRun(t, agentBin, "service", "uninstall")
	c.status(t, StateNotInstalled)
	if out, code := c.run("test", "-e", unitPath); code == 0 {
		t.Errorf("%s still exists after uninstall: %s", unitPath, out)
	}
	if out, _ := c.run("systemctl", "list-unit-files", "--no-legend", "sutra-agent.service"); strings.Contains(out, "sutra-agent") {
		t.Errorf("systemctl list-unit-files still lists sutra-agent after uninstall: %q", out)
	}
	if out := c.mustRun(t, "systemctl", "show", "sutra-agent", "-p", "ActiveState", "--value"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("after uninstall ActiveState = %q, want inactive", out)
	}
}

// brokenUpgrade has the master ask the agent for a release that crashes at
// start-up. The agent applies it and exits; systemd restarts the broken
// binary every RestartSec. The upgrade guard is killed with SIGKILL as soon
// as it runs (it would not survive a reboot either), so what must restore
// the previous binary, before the unit's start limit, is the unit's
// ExecStartPre= upgrade-check run from the kept previous binary. The node
// keeps its pid throughout.
func brokenUpgrade(t *testing.T, c *container, m *hostMaster, bins string, nodes []int) {
	t.Helper()
	plat, arch, err := platform.Current()
	if err != nil {
		t.Fatal(err)
	}
	name := "sutra-agent-" + brokenVersion + "-" + plat + "-" + arch
	copyFile(t, filepath.Join(bins, "brokenagent"), filepath.Join(m.binariesDir, ".tmp-"+name))
	if err := os.Rename(filepath.Join(m.binariesDir, ".tmp-"+name), filepath.Join(m.binariesDir, name)); err != nil {
		t.Fatal(err)
	}
	m.waitServed(t, "/api/artifacts/sutra-agent/"+brokenVersion+"/"+plat+"/"+arch)
	start := time.Now()
	if out, err := m.sutra(t, filepath.Join(bins, "sutra"), "agents", "set-version", itAgentID, "--agent", brokenVersion); err != nil {
		t.Fatalf("sutra agents set-version: %v\n%s", err, out)
	}
	// Kill the guard the old agent leaves behind, once it is recorded.
	killBy := time.Now().Add(itWaitLong)
	for {
		out, _ := c.run("cat", "/var/lib/sutra/agent/upgrade.json")
		var st struct {
			ToVersion string `json:"to_version"`
			GuardPID  int    `json:"guard_pid"`
		}
		if json.Unmarshal([]byte(out), &st) == nil && st.ToVersion == brokenVersion && st.GuardPID != 0 {
			if out, code := c.run("sh", "-c", "kill -9 "+strconv.Itoa(st.GuardPID)); code != 0 {
				t.Fatalf("kill -9 the upgrade guard pid %d: exit %d %s", st.GuardPID, code, out)
			}
			t.Logf("killed the upgrade guard pid %d (as a reboot would)", st.GuardPID)
			break
		}
		if time.Now().After(killBy) {
			t.Fatalf("no upgrade guard recorded for %s within %v: %s", brokenVersion, itWaitLong, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	deadline := time.Now().Add(itUpgradeWindow + itWaitLong)
	var a agentJSON
	for time.Now().Before(deadline) {
		a = m.agent(t, itAgentID)
		if a.AgentVersion == itVersion && a.Health == "healthy" && a.Upgrade != nil && a.Upgrade.Phase == "rolled_back" && a.Upgrade.ToVersion == brokenVersion {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	journal, _ := c.run("journalctl", "-u", "sutra-agent", "--no-pager", "-o", "cat", "--since", "-5min")
	limited := strings.Contains(journal, "Start request repeated too quickly")
	if a.Upgrade == nil || a.Upgrade.Phase != "rolled_back" || a.AgentVersion != itVersion || a.Health != "healthy" {
		props, _ := c.run("systemctl", "show", "sutra-agent", "-p", "ActiveState,SubState,Result,NRestarts")
		guard, _ := c.run("cat", "/var/lib/sutra/agent/upgrade-guard.log")
		t.Fatalf("after set-version %s the agent is %s %s upgrade %+v, want %s healthy rolled back from %s (start limit hit: %v)\n%s\nguard log:\n%s\njournal:\n%s",
			brokenVersion, a.AgentVersion, a.Health, a.Upgrade, itVersion, brokenVersion, limited, props, guard, tail(journal, 40))
	}
	if !strings.Contains(a.Upgrade.Message, "pre-start check") {
		t.Errorf("rollback message %q, want it done by the pre-start check (ExecStartPre), the guard being dead", a.Upgrade.Message)
	}
	props := c.mustRun(t, "systemctl", "show", "sutra-agent", "-p", "ActiveState,SubState,NRestarts")
	t.Logf("broken %s rolled back and the agent healthy again after %v (start limit hit: %v; %s): %s",
		brokenVersion, time.Since(start).Round(10*time.Millisecond), limited, strings.Join(strings.Fields(props), " "), a.Upgrade.Message)
	c.waitMainPID(t, 0)
	c.requireAlive(t, nodes, "after the broken upgrade")
	m.waitNodePIDs(t, itAgentID, nodes, "after the broken upgrade")
}

// container is a booted systemd-nspawn container.
type container struct {
	nspawn *exec.Cmd
	exited chan struct{}
	pid    int // the container's PID 1 (systemd) as seen from the host
}

// bootContainer boots the cached rootfs with the host directory dir mounted
// read-only at /opt/sutra-it. Changes to the rootfs go to a tmpfs overlay and
// vanish on exit, so the cache stays clean. The container shares the host's
// network namespace (no --private-network): it reaches a master on loopback.
func bootContainer(t *testing.T, dir string) *container {
	t.Helper()
	start := time.Now()
	script, err := filepath.Abs(filepath.Join("..", "..", "test", "systemd", "rootfs.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, stderr.String())
	}
	root := strings.TrimSpace(string(out))
	t.Logf("rootfs %s ready in %v", root, time.Since(start).Round(time.Millisecond))

	logPath := filepath.Join(t.TempDir(), "nspawn.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	start = time.Now()
	c := &container{exited: make(chan struct{})}
	c.nspawn = exec.Command("systemd-nspawn", "-D", root, "--boot", "--register=no", "--keep-unit",
		"--volatile=overlay", "--bind-ro="+dir+":/opt/sutra-it", "--machine=sutra-it-"+strconv.Itoa(os.Getpid()))
	c.nspawn.Stdout, c.nspawn.Stderr = logf, logf
	if err := c.nspawn.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { c.nspawn.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.powerOff(t) })

	deadline := time.Now().Add(itWaitLong)
	state := ""
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("systemd-nspawn exited while booting:\n%s", tail(string(log), 40))
		default:
		}
		if c.pid == 0 {
			c.pid = containerInit(c.nspawn.Process.Pid)
		}
		if c.pid != 0 {
			state, _ = c.run("systemctl", "is-system-running")
			state = strings.TrimSpace(state)
			if state == "running" || state == "degraded" {
				t.Logf("container booted (%s) in %v; its systemd is host pid %d", state, time.Since(start).Round(time.Millisecond), c.pid)
				if state == "degraded" {
					failed, _ := c.run("systemctl", "--failed", "--no-legend")
					t.Logf("failed units: %s", failed)
				}
				return c
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	t.Fatalf("container not up after %v (is-system-running %q):\n%s", itWaitLong, state, tail(string(log), 40))
	return nil
}

// containerInit finds the container's systemd among the descendants of the
// nspawn process: the process whose innermost PID is 1.
func containerInit(nspawnPID int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		fields := statusFields(string(status))
		ns := strings.Fields(fields["NSpid"])
		if len(ns) < 2 || ns[len(ns)-1] != "1" {
			continue
		}
		for p, depth := pid, 0; p > 1 && depth < 8; depth++ {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
			if err != nil {
				break
			}
			if p, _ = strconv.Atoi(statusFields(string(st))["PPid"]); p == nspawnPID {
				return pid
			}
		}
	}
	return 0
}

func statusFields(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// run runs a command inside the container (all its namespaces) and returns
// its combined output and exit code (-1 when it could not run).
func (c *container) run(args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), itWaitLong)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid), "-a"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(out), exit.ExitCode()
	}
	if err != nil {
		return string(out) + err.Error(), -1
	}
	return string(out), 0
}

func (c *container) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, code := c.run(args...)
	if code != 0 {
		t.Fatalf("in container: %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// status checks "sutra-agent service status" prints want and exits with its code.
func (c *container) status(t *testing.T, want State) {
	t.Helper()
	out, code := c.run(agentBin, "service", "status")
	if strings.TrimSpace(out) != string(want) || code != want.ExitCode() {
		t.Errorf("service status = %q exit %d, want %q exit %d", out, code, want, want.ExitCode())
	}
}

// waitMainPID waits until the unit is active with a MainPID other than 0
// and old, and returns it.
func (c *container) waitMainPID(t *testing.T, old int) int {
	t.Helper()
	deadline := time.Now().Add(itWaitLong)
	last := ""
	for time.Now().Before(deadline) {
		out, _ := c.run("systemctl", "show", "sutra-agent", "-p", "ActiveState,SubState,MainPID")
		last = out
		f := statusFields(strings.ReplaceAll(out, "=", ":"))
		pid, _ := strconv.Atoi(f["MainPID"])
		if f["ActiveState"] == "active" && f["SubState"] == "running" && pid != 0 && pid != old {
			return pid
		}
		time.Sleep(100 * time.Millisecond)
	}
	journal, _ := c.run("journalctl", "-u", "sutra-agent", "--no-pager", "-n", "50")
	t.Fatalf("sutra-agent not running with a new MainPID (old %d) after %v:\n%s\n%s", old, itWaitLong, last, journal)
	return 0
}

// waitFile waits for a non-empty file inside the container and returns it.
func (c *container) waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(itWaitLong)
	for time.Now().Before(deadline) {
		if out, code := c.run("cat", path); code == 0 && strings.TrimSpace(out) != "" {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not written in the container after %v", path, itWaitLong)
	return ""
}

func (c *container) requireAlive(t *testing.T, pids []int, when string) {
	t.Helper()
	for _, pid := range pids {
		if out, code := c.run("test", "-d", fmt.Sprintf("/proc/%d", pid)); code != 0 {
			t.Errorf("node pid %d gone %s %s", pid, when, out)
		}
	}
}

// waitReadopted waits until the agent process pid logged that it re-adopted
// every node pid in pids (rather than starting new nodes).
func (c *container) waitReadopted(t *testing.T, pid int, pids []int) {
	t.Helper()
	deadline := time.Now().Add(itWaitLong)
	journal := ""
	for time.Now().Before(deadline) {
		journal, _ = c.run("journalctl", "_PID="+strconv.Itoa(pid), "--no-pager", "-o", "cat")
		all := true
		for _, p := range pids {
			all = all && strings.Contains(journal, "re-adopted running node") && strings.Contains(journal, "pid="+strconv.Itoa(p)+" ")
		}
		if all {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("agent pid %d did not log re-adopting node pids %v within %v:\n%s", pid, pids, itWaitLong, tail(journal, 40))
}

// powerOff shuts the container down cleanly, or kills nspawn after a minute.
func (c *container) powerOff(t *testing.T) {
	if c.pid != 0 {
		c.run("systemctl", "poweroff", "--no-block")
	}
	select {
	case <-c.exited:
		return
	case <-time.After(60 * time.Second):
	}
	t.Logf("container did not power off in 60 s: killing systemd-nspawn")
	c.nspawn.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// hostMaster is a real sutra-master on the host's loopback, reachable from
// the container (shared network namespace). Used with the real agent only.
type hostMaster struct {
	grpcAddr, httpAddr string
	binariesDir        string
	dataDir            string // holds admin.token and tls/ca.crt (issue 12)
	token              string // the operator token
	client             *http.Client
}

// get is GET path on the master's HTTP API (HTTPS: --http-tls) with the
// operator token.
func (m *hostMaster) get(path string) (*http.Response, error) {
	req, err := http.NewRequest("GET", "https://"+m.httpAddr+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	return m.client.Do(req)
}

// joinToken makes a join token with the sutra CLI, as an operator does.
func (m *hostMaster) joinToken(t *testing.T, cli string) string {
	t.Helper()
	out, err := m.sutra(t, cli, "tokens", "create", "--uses", "5")
	if err != nil {
		t.Fatalf("sutra tokens create: %v\n%s", err, out)
	}
	return strings.Fields(out)[0]
}

// agentJSON is the part of GET /api/agents/{id} (master/fleetapi) the test reads.
type agentJSON struct {
	ID           string `json:"agent_id"`
	AgentVersion string `json:"agent_version"`
	Health       string `json:"health"`
	Upgrade      *struct {
		Phase       string `json:"phase"`
		FromVersion string `json:"from_version"`
		ToVersion   string `json:"to_version"`
		Message     string `json:"message"`
	} `json:"upgrade"`
}

// agent returns GET /api/agents/{id} (zero when it fails).
func (m *hostMaster) agent(t *testing.T, id string) agentJSON {
	t.Helper()
	var a agentJSON
	resp, err := m.get("/api/agents/" + id)
	if err != nil {
		return a
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_ = json.NewDecoder(resp.Body).Decode(&a)
	}
	return a
}

// waitServed waits until GET path on the master's HTTP API answers 200.
func (m *hostMaster) waitServed(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(itWaitLong)
	for time.Now().Before(deadline) {
		if resp, err := m.get(path); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the master does not serve %s within %v", path, itWaitLong)
}

func startHostMaster(t *testing.T, bins string) *hostMaster {
	t.Helper()
	dir := t.TempDir()
	binaries := filepath.Join(dir, "binaries")
	if err := os.MkdirAll(binaries, 0o755); err != nil {
		t.Fatal(err)
	}
	plat, arch, err := platform.Current()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(bins, "storage-server"), filepath.Join(binaries, "storage-server-"+itVersion+"-"+plat+"-"+arch))
	m := &hostMaster{grpcAddr: testutil.FreeAddr(t), httpAddr: testutil.FreeAddr(t), binariesDir: binaries, dataDir: filepath.Join(dir, "data")}
	cmd := exec.Command(filepath.Join(bins, "sutra-master"))
	cmd.Env = append(os.Environ(), "BIND_ADDRESS=127.0.0.1",
		"GRPC_PORT="+portOf(m.grpcAddr), "HTTP_PORT="+portOf(m.httpAddr),
		"BINARIES_DIR="+binaries, "SUTRA_DATA_DIR="+filepath.Join(dir, "data"),
		// Issue 12: HTTPS on the HTTP port, downloads for enrolled agents only.
		"SUTRA_HTTP_TLS=1", "SUTRA_PRIVATE_DOWNLOADS=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sutra-master: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	// The master writes the operator's credentials before it serves.
	for deadline := time.Now().Add(itWaitLong); ; {
		creds, err := opauth.Load(m.dataDir)
		if err == nil {
			m.token = creds.Token
			m.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: creds.Roots, MinVersion: tls.VersionTLS12}}}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master's operator credentials: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m
}

// waitRegistered polls GET /api/agents/{id} until the master knows the agent
// and calls it healthy.
func (m *hostMaster) waitRegistered(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(itWaitLong)
	last := ""
	for time.Now().Before(deadline) {
		a := m.agent(t, id)
		last = fmt.Sprintf("%+v", a)
		if a.ID == id && a.Health == "healthy" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("agent %s not registered and healthy at the master on %s within %v (last: %s)", id, m.grpcAddr, itWaitLong, last)
}

// sutra runs the sutra CLI against the master and returns its output.
func (m *hostMaster) sutra(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), itWaitLong+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--master", m.grpcAddr, "--http", "https://" + m.httpAddr}, args...)...)
	cmd.Env = append(os.Environ(), "SUTRA_DATA_DIR="+m.dataDir) // admin.token and tls/ca.crt
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// nodePIDs returns the pids of the agent's running nodes from GET /api/nodes
// (master/fleetapi: a JSON array of fleet.Node).
func (m *hostMaster) nodePIDs(t *testing.T, agentID string) []int {
	t.Helper()
	resp, err := m.get("/api/nodes?agent=" + agentID)
	if err != nil {
		t.Fatalf("GET /api/nodes: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/nodes?agent=%s: %s", agentID, resp.Status)
	}
	var nodes []struct {
		ID      string `json:"node_id"`
		AgentID string `json:"agent_id"`
		Status  *struct {
			State string `json:"state"`
			PID   int    `json:"pid"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&nodes); err != nil {
		t.Fatalf("GET /api/nodes: decode: %v", err)
	}
	var pids []int
	for _, n := range nodes {
		if n.AgentID == agentID && n.Status != nil && n.Status.State == "running" && n.Status.PID != 0 {
			pids = append(pids, n.Status.PID)
		}
	}
	sort.Ints(pids)
	return pids
}

// waitNodePIDs waits until the master reports exactly want as the agent's
// running node pids.
func (m *hostMaster) waitNodePIDs(t *testing.T, agentID string, want []int, when string) {
	t.Helper()
	deadline := time.Now().Add(itWaitLong)
	var got []int
	for time.Now().Before(deadline) {
		if got = m.nodePIDs(t, agentID); fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: the master reports node pids %v for %s, want %v", when, got, agentID, want)
}

// goBuild builds pkgs (relative to the module root) into dir with
// CGO_ENABLED=0, with ldflags when not empty.
func goBuild(t *testing.T, dir, ldflags string, pkgs ...string) {
	t.Helper()
	err := testutil.GoBuild(testutil.Build{Dir: filepath.Join("..", ".."), Out: dir + string(os.PathSeparator),
		LDFlags: ldflags, Env: []string{"CGO_ENABLED=0"}, Pkgs: pkgs})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
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

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
