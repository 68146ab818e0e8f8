//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/testproc"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Issue 10 item 11 (with issue 12's enrollment): two machines configured
// with one agent_id. The second agent's enrollment is refused
// (ALREADY_EXISTS, the token not spent) while the first is alive (each keeps its
// own instance id in its data dir); it says so in its log, starts nothing
// and keeps retrying; once the first is gone for good it takes over.
func TestSecondAgentWithTheSameAgentIDIsRefused(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-twin", "")
	a.waitRegistered()
	st := runNode(a, "node-twin")
	idA, err := os.ReadFile(filepath.Join(a.dataDir, "instance-id"))
	if err != nil {
		t.Fatalf("first agent's instance id: %v", err)
	}

	// The twin: its own directories, the first agent's agent_id.
	b := g.newAgent("agent-twin-b", "")
	b.kill9()
	cfg, err := os.ReadFile(b.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), `agent_id = "agent-twin-b"`, `agent_id = "agent-twin"`, 1))
	if err := os.WriteFile(b.cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	// A fresh machine: no certificate yet (the one it got as agent-twin-b
	// names that id), so it enrolls with the join token as agent-twin.
	if err := os.RemoveAll(filepath.Join(b.dataDir, "tls")); err != nil {
		t.Fatal(err)
	}
	b.start()
	testproc.WaitFor(t, long, "the twin to log the master's refusal", func() (bool, string) {
		return b.logCount("master refused enrollment", "unique agent_id", "agent-twin") >= 1, testproc.Tail(b.logPath, 5)
	})
	testproc.WaitFor(t, long, "the twin to retry", func() (bool, string) {
		return b.logCount("master refused enrollment") >= 2 || b.logCount("attempt=2") >= 1, testproc.Tail(b.logPath, 5)
	})
	idB, err := os.ReadFile(filepath.Join(b.dataDir, "instance-id"))
	if err != nil || string(idB) == string(idA) {
		t.Fatalf("twin's instance id %q (%v), want its own, not %q", idB, err, idA)
	}
	if n := b.logCount("starting node"); n != 0 {
		t.Errorf("the refused twin started %d nodes", n)
	}
	if now := g.waitRunning("node-twin"); now.GetPid() != st.GetPid() {
		t.Errorf("node-twin pid %d -> %d while the twin was refused", st.GetPid(), now.GetPid())
	}
	if ag := a.waitRegistered(); ag.GetHostname() == "" {
		t.Errorf("agent record lost its hostname: %+v", ag)
	}

	// The first machine is gone for good: once the master marks it offline,
	// the twin's retries get through and it runs the agent's nodes.
	a.kill9()
	killProcessesUnder(a.dir)
	testproc.WaitFor(t, 3*long, "the twin to register after the first agent went offline", func() (bool, string) {
		return b.logCount("registered with master", "agent=agent-twin instance=") >= 1, testproc.Tail(b.logPath, 3)
	})
	g.waitRunning("node-twin", func(s *gridv1.NodeStatus) bool { return s.GetPid() != st.GetPid() })
	if pids := nodeProcesses(b.nodeDataDir("node-twin")); len(pids) != 1 {
		t.Errorf("processes serving the twin's node-twin: %v, want one", pids)
	}
}
