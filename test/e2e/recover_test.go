//go:build linux

package e2e

import (
	"bytes"
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

// readRecord is the agent's node record as raw JSON objects.
func readRecord(t *testing.T, a *agent) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dataDir, "nodes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Nodes map[string]map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("nodes.json: %v\n%s", err, b)
	}
	return rec.Nodes
}

func writeRecord(t *testing.T, a *agent, nodes map[string]map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"version": 1, "nodes": nodes})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.dataDir, "nodes.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// procStartTime is field 22 of /proc/<pid>/stat.
func procStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Issue 10 item 4: a corrupt nodes.json while nodes run. The restarted agent
// keeps the corrupt file aside, rebuilds its record from the running nodes
// (found by the marker in their environment, checked by pid, start time,
// boot id and executable), re-adopts them (same pids, no second copy) and
// tells the master in the nodes' status.
func TestCorruptNodeRecordIsRebuiltFromRunningNodes(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-corrupt", "")
	a.waitRegistered()
	ids := []string{"node-c1", "node-c2"}
	before := map[string]*gridv1.NodeStatus{}
	for _, id := range ids {
		before[id] = runNode(a, id)
		putKey(t, before[id].GetEndpoint(), "k", id)
	}

	a.kill9()
	garbage := []byte("{\"version\":1,\"nodes\":{\"node-c1\":{\"node_id\":\"node-c1\",\"po\x00\xff")
	recPath := filepath.Join(a.dataDir, "nodes.json")
	if err := os.WriteFile(recPath, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	a.start()

	testproc.WaitFor(t, long, "agent log says the record was rebuilt", func() (bool, string) {
		return a.logCount("node record rebuilt from running nodes") == 1, testproc.Tail(a.logPath, 5)
	})
	restarted := time.Now().Unix()
	g.waitAgent(a.id, "heartbeating again after the restart", func(ag *gridv1.Agent) bool {
		return ag.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY && ag.GetLastHeartbeatUnix() > restarted
	})
	for _, id := range ids {
		pid := int(before[id].GetPid())
		after := g.waitRunning(id, func(s *gridv1.NodeStatus) bool { return strings.Contains(s.GetMessage(), "moved aside") })
		if int(after.GetPid()) != pid {
			t.Errorf("%s: pid %d after the agent restart, want the re-adopted %d", id, after.GetPid(), pid)
		}
		if after.GetEndpoint() != before[id].GetEndpoint() {
			t.Errorf("%s: endpoint %s after recovery, want %s", id, after.GetEndpoint(), before[id].GetEndpoint())
		}
		if pids := nodeProcesses(a.nodeDataDir(id)); !slices.Equal(pids, []int{pid}) {
			t.Errorf("processes serving %s: %v, want only the re-adopted %d", id, pids, pid)
		}
		if n := a.logCount("starting node", id); n != 1 {
			t.Errorf("agent started %s %d times across both runs, want 1", id, n)
		}
		if got := getKey(t, after.GetEndpoint(), "k"); got != id {
			t.Errorf("%s: GET /kv/k = %q after recovery, want %q", id, got, id)
		}
		if !strings.Contains(after.GetMessage(), "nodes.json.corrupt-") {
			t.Errorf("%s: status message %q does not name the corrupt record's copy", id, after.GetMessage())
		}
	}

	// The corrupt file is kept aside, byte for byte; the new record names
	// both nodes with their boot id.
	copies, _ := filepath.Glob(recPath + ".corrupt-*")
	if len(copies) != 1 {
		t.Fatalf("corrupt copies %v, want one", copies)
	}
	if b, _ := os.ReadFile(copies[0]); !bytes.Equal(b, garbage) {
		t.Errorf("corrupt copy holds %q, want the corrupt record %q", b, garbage)
	}
	testproc.WaitFor(t, long, "the rebuilt record names both nodes", func() (bool, string) {
		b, _ := os.ReadFile(recPath)
		var rec struct {
			Nodes map[string]map[string]any `json:"nodes"`
		}
		if json.Unmarshal(b, &rec) != nil {
			return false, string(b)
		}
		for _, id := range ids {
			n := rec.Nodes[id]
			if n == nil || n["pid"] != float64(before[id].GetPid()) || n["boot_id"] == nil || n["boot_id"] == "" {
				return false, string(b)
			}
		}
		return true, ""
	})

	// The recovered nodes are supervised: a killed one comes back.
	pid := int(before["node-c1"].GetPid())
	if err := killPID(pid); err != nil {
		t.Fatal(err)
	}
	g.waitRunning("node-c1", func(s *gridv1.NodeStatus) bool { return int(s.GetPid()) != pid })
}

// Issue 10 item 5: after a reboot a recorded pid and start time can belong
// to an unrelated process. A record whose boot id is not this boot's is not
// adopted, the process holding the pid is left alone, and the node is
// started afresh.
func TestRecordOfAnotherBootIsNotAdopted(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-reboot", "")
	a.waitRegistered()
	st := runNode(a, "node-rb")
	a.kill9()
	old := int(st.GetPid())
	if err := killPID(old); err != nil {
		t.Fatal(err)
	}
	testproc.WaitFor(t, long, "the node to be gone", func() (bool, string) { return !alive(old), "" })

	// An unrelated process: the same executable, serving something else.
	otherPort := testproc.FreePort(t)
	otherDir := filepath.Join(g.root, "unrelated")
	other := testproc.Start(t, "unrelated", a.cachedBinary(v100),
		[]string{"--port", strconv.Itoa(otherPort), "--data-dir", otherDir, "--node-id", "unrelated"}, nil,
		filepath.Join(g.root, "unrelated.log"))
	otherEndpoint := "127.0.0.1:" + strconv.Itoa(otherPort)
	testproc.WaitFor(t, long, "the unrelated process to serve", func() (bool, string) { return healthy(otherEndpoint), "" })

	// The record names it as node-rb, as a record written before a reboot
	// would when the pid and start time happen to repeat.
	rec := readRecord(t, a)
	n := rec["node-rb"]
	n["pid"] = other.PID()
	n["start_time"] = procStartTime(t, other.PID())
	n["boot_id"] = "00000000-0000-0000-0000-000000000000"
	writeRecord(t, a, rec)
	a.start()

	after := g.waitRunning("node-rb", func(s *gridv1.NodeStatus) bool { return int(s.GetPid()) != other.PID() })
	if a.logCount("re-adopted running node", "node-rb") != 0 {
		t.Errorf("agent re-adopted the unrelated process:\n%s", testproc.Tail(a.logPath, 20))
	}
	// Well past the unhealthy threshold a wrongly adopted process would reach.
	time.Sleep(5 * time.Second)
	if other.Exited() || !healthy(otherEndpoint) {
		t.Errorf("the unrelated process %d was killed or disturbed", other.PID())
	}
	if now := g.waitRunning("node-rb"); now.GetPid() != after.GetPid() {
		t.Errorf("node-rb pid changed %d -> %d", after.GetPid(), now.GetPid())
	}
}

// A record written by an agent that kept no boot id (an agent upgrade): the
// node is re-adopted (same pid, its command line is the node's), and the
// record gains the boot id.
func TestRecordWithoutBootIDIsReadopted(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	a := g.newAgent("agent-legacy", "")
	a.waitRegistered()
	st := runNode(a, "node-legacy")
	a.kill9()
	rec := readRecord(t, a)
	delete(rec["node-legacy"], "boot_id")
	writeRecord(t, a, rec)
	a.start()
	testproc.WaitFor(t, long, "agent log says the node was re-adopted", func() (bool, string) {
		return a.logCount("re-adopted running node", "node-legacy") == 1, testproc.Tail(a.logPath, 5)
	})
	if now := g.waitRunning("node-legacy"); now.GetPid() != st.GetPid() {
		t.Errorf("node-legacy pid %d -> %d, want it re-adopted", st.GetPid(), now.GetPid())
	}
	testproc.WaitFor(t, long, "the record to gain the boot id", func() (bool, string) {
		n := readRecord(t, a)["node-legacy"]
		return n["boot_id"] != nil && n["boot_id"] != "" && n["pid"] == float64(st.GetPid()), ""
	})
}
