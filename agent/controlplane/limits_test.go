package controlplane

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/limits"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"github.com/sutragrid/sutra/supervisor"
)

// checkNode applies the master's rules (internal/limits, internal/ident) to
// one converted node status.
func checkNode(t *testing.T, n *gridv1.NodeStatus) {
	t.Helper()
	errs := []error{
		limits.Text("endpoint", n.GetEndpoint(), limits.MaxTextLen),
		limits.Text("last exit", n.GetLastExit(), limits.MaxTextLen),
		limits.Message("message", n.GetMessage(), limits.MaxMessageLen),
	}
	if n.GetSinceUnix() != 0 {
		errs = append(errs, limits.Time("since", time.Unix(n.GetSinceUnix(), 0)))
	}
	_, err := limits.LogLines("log", n.GetLastLogLines())
	errs = append(errs, err)
	for _, err := range errs {
		if err != nil {
			t.Errorf("node %s: the master would refuse: %v", n.GetNodeId(), err)
		}
	}
	if n.GetPid() < 0 || n.GetPid() > limits.MaxPID || n.GetRestartCount() > limits.MaxRestartCount {
		t.Errorf("node %s: pid %d, restart count %d out of range", n.GetNodeId(), n.GetPid(), n.GetRestartCount())
	}
}

// Issue 9 item 5: the agent clips what it reports to the master's limits,
// so that a strange log line or clock never gets its heartbeat refused.
func TestReportFitsTheMastersLimits(t *testing.T) {
	lines := make([]string, 80)
	for i := range lines {
		lines[i] = fmt.Sprintf("%d %s\x1b[31m\xff", i, strings.Repeat("é", 1500))
	}
	var nodes []NodeStatus
	for i := range limits.MaxNodesPerAgent {
		nodes = append(nodes, NodeStatus{
			NodeID: fmt.Sprintf("node-%d", i), State: supervisor.StateFailed, PID: -5 + i%3*math.MaxInt32, RestartCount: -1 + i%2*math.MaxInt32,
			Endpoint: "127.0.0.1:7100\n" + strings.Repeat("e", 400), LastExit: "exit\r\x00" + strings.Repeat("x", 400),
			Message: "bad \xff utf8 " + strings.Repeat("m", 5000), LastLogLines: lines,
			Since: []time.Time{time.Unix(253402300800, 0), time.Unix(-100, 0), time.Unix(1_700_000_000, 0)}[i%3],
		})
	}
	out := nodesToProto(nodes)
	logBytes := 0
	for _, n := range out {
		checkNode(t, n)
		for _, l := range n.GetLastLogLines() {
			logBytes += len(l)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	if logBytes > limits.MaxReportLogBytes || logBytes < limits.MaxReportLogBytes/2 {
		t.Errorf("report log lines = %d bytes, want close to the %d budget", logBytes, limits.MaxReportLogBytes)
	}
	if got := out[0].GetLastLogLines(); len(got) != limits.MaxLogLines || !strings.HasPrefix(got[len(got)-1], "79 ") {
		t.Errorf("first node keeps %d lines ending %.10q; want the newest %d", len(got), got[len(got)-1], limits.MaxLogLines)
	}
	if out[2].GetSinceUnix() != 1_700_000_000 || out[0].GetSinceUnix() != 0 || out[1].GetSinceUnix() != 0 {
		t.Errorf("since = %d, %d, %d; want 0 for times the master cannot store", out[0].GetSinceUnix(), out[1].GetSinceUnix(), out[2].GetSinceUnix())
	}
	up := upgradeToProto(&UpgradeStatus{Phase: "failed", FromVersion: "1.0.0", ToVersion: "1.1.0", Message: strings.Repeat("m", 9000),
		LastLogLines: lines, Updated: time.Unix(math.MaxInt64, 0)})
	if _, err := limits.LogLines("upgrade", up.GetLastLogLines()); err != nil || len(up.GetMessage()) > limits.MaxMessageLen || up.GetUpdatedUnix() != 0 {
		t.Errorf("upgrade status the master would refuse: %v, message %d bytes, updated %d", err, len(up.GetMessage()), up.GetUpdatedUnix())
	}
}

// Issue 9 item 5: node ids are checked by the same rule on both sides; a
// desired node whose id is a path the agent would create is not run.
func TestDesiredRefusesUnsafeNodeIDs(t *testing.T) {
	d := &gridv1.DesiredState{Generation: 7, Nodes: []*gridv1.DesiredNode{
		{NodeId: "node-1", Port: 7100}, {NodeId: ".."}, {NodeId: "."}, {NodeId: "-rf"}, {NodeId: "../../etc"},
		{NodeId: `..\windows`}, {NodeId: "CON"}, {NodeId: ""}, {NodeId: strings.Repeat("n", ident.MaxLen+1)},
		{NodeId: "node-2", Port: 70000}, {NodeId: "node-3"},
	}}
	got, refused := desiredFromProto(d)
	if len(got.Nodes) != 2 || got.Nodes[0].NodeID != "node-1" || got.Nodes[1].NodeID != "node-3" || got.Generation != 7 {
		t.Fatalf("desired nodes = %+v, want node-1 and node-3", got.Nodes)
	}
	if len(refused) != 9 {
		t.Fatalf("refused = %q, want 9 ids", refused)
	}
}
