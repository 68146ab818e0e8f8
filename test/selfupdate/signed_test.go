//go:build linux

package selfupdate

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/agent/upgrade"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// TestUnsignedAgentReleaseRefused: an agent configured with a release key
// runs the signed storage-server the real master serves, and refuses an
// unsigned sutra-agent 1.1.0: the upgrade fails with the reason "unsigned"
// reported to the master, the agent never exits for a restart, keeps
// running 1.0.0 from the same executable, and its node keeps its pid.
func TestUnsignedAgentReleaseRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with real binaries; run without -short")
	}
	plat, arch, err := platform.Current()
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := pub.MarshalText()
	root := t.TempDir()
	binDir := filepath.Join(root, "binaries")
	mkdir(t, binDir)
	ss := "storage-server-1.0.0-" + plat + "-" + arch
	data, err := os.ReadFile(bins["storage-server"])
	if err != nil {
		t.Fatal(err)
	}
	sig, _, err := release.Sign(priv, bytes.NewReader(data), release.Identity{Artifact: "storage-server", Version: "1.0.0", Platform: plat, Arch: arch})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(binDir, ss+release.SignatureSuffix), string(sig))
	publish(t, binDir, bins["storage-server"], ss)
	publish(t, binDir, bins["sutra-agent-1.1.0"], "sutra-agent-1.1.0-"+plat+"-"+arch) // unsigned
	m := startMaster(t, binDir, filepath.Join(root, "master"))
	ctx := context.Background()

	agentDir := filepath.Join(root, "agent")
	mkdir(t, agentDir)
	exe := filepath.Join(agentDir, "sutra-agent")
	copyFile(t, bins["sutra-agent-1.0.0"], exe)
	before := hashFile(t, exe)
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
[security]
release_public_keys = [%q]
`, agentID, m.grpcAddr, m.joinToken, filepath.Join(agentDir, "cache"), dataDir, int(window/time.Second),
		"http://"+m.httpAddr, filepath.Join(agentDir, "nodes"), port(freeAddr(t)), string(pubText)))

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
	m.waitAgent(t, fail, "1.0.0 registered and healthy", func(a *gridv1.Agent) bool {
		return a.GetAgentVersion() == "1.0.0" && a.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY
	})
	if _, err := m.grid.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: agentID, NodeId: nodeID}); err != nil {
		t.Fatal(err)
	}
	pid = m.waitNode(t, fail, "running", 0)
	if _, err := os.Stat(filepath.Join(agentDir, "cache", "storage-server", "1.0.0", "storage-server"+release.SignatureSuffix)); err != nil {
		fail("the signature is not kept in the cache beside the signed storage-server: %v", err)
	}

	if _, err := m.grid.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: agentID, AgentVersion: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	a := m.waitAgent(t, fail, "the unsigned 1.1.0 refused", func(a *gridv1.Agent) bool {
		return a.GetUpgrade().GetPhase() == string(upgrade.PhaseFailed) && a.GetUpgrade().GetToVersion() == "1.1.0"
	})
	if msg := a.GetUpgrade().GetMessage(); !strings.Contains(msg, "signature unsigned") {
		fail("upgrade failure reported as %q, want the reason (signature unsigned)", msg)
	}
	if a.GetAgentVersion() != "1.0.0" {
		fail("agent version %s after the refusal, want 1.0.0", a.GetAgentVersion())
	}
	if got := hashFile(t, exe); got != before {
		fail("the executable changed although 1.1.0 is unsigned")
	}
	if n := svc.exits(3); n != 0 {
		fail("the agent exited %d times for a restart into the unsigned release", n)
	}
	if got := m.waitNode(t, fail, "running", pid); got != pid {
		fail("node pid after the refusal = %d, want %d", got, pid)
	}
	t.Logf("unsigned agent 1.1.0 refused: %s", a.GetUpgrade().GetMessage())
}
