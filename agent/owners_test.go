package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/supervisor"
)

// The stopped-node reports: capped (the oldest goes first), expiring, and
// dropped once a heartbeat carried them; a node in the live report is not
// reported stopped too.
func TestStoppedReports(t *testing.T) {
	s := stoppedReports{m: map[string]stoppedNode{}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxStoppedReported + 3 {
		s.note(controlplane.NodeStatus{NodeID: fmt.Sprintf("n%03d", i), State: supervisor.StateStopped}, t0.Add(time.Duration(i)*time.Second))
	}
	got := s.report(map[string]bool{"n010": true}, t0)
	if len(got) != maxStoppedReported-1 {
		t.Fatalf("%d reported, want the cap %d minus the one in the live report", len(got), maxStoppedReported)
	}
	if got[0].NodeID != "n003" {
		t.Errorf("oldest reported %s, want n003 (n000-n002 dropped for the cap)", got[0].NodeID)
	}
	s.heartbeatDone()
	if got := s.report(nil, t0); len(got) != 1 || got[0].NodeID != "n010" {
		t.Errorf("after the heartbeat: %v, want only n010 (it was not in the carried report)", got)
	}
	if got := s.report(nil, t0.Add(time.Hour)); len(got) != 0 {
		t.Errorf("after stoppedReportFor: %v, want none", got)
	}
}

// At most one node upgrade job runs; a stop job is started once per node.
func TestNodeJobs(t *testing.T) {
	n := nodeJobs{upgrades: map[string]*job{}, stopping: map[string]*job{}}
	running := func(key string) *job { return &job{key: key, done: make(chan struct{})} }
	a := running("sum")
	if !n.startUpgrade("a", func() *job { return a }) {
		t.Fatal("first upgrade not started")
	}
	if n.startUpgrade("b", func() *job { t.Fatal("second upgrade made while one runs"); return nil }) {
		t.Error("second upgrade started while one runs")
	}
	if up, _ := n.snapshot(); len(up) != 1 || up["a"] != "sum" {
		t.Errorf("upgrading %v, want a -> sum", up)
	}
	close(a.done)
	n.done("a", a)
	if !n.startUpgrade("b", func() *job { return running("sum") }) {
		t.Error("upgrade of b not started after a's ended")
	}
	made := 0
	for range 3 {
		n.startStop("c", func() *job { made++; return running("stop") })
	}
	if made != 1 || !n.busy("c") {
		t.Errorf("%d stop jobs made for c (busy %v), want 1", made, n.busy("c"))
	}
}
