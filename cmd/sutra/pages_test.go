package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sutragrid/sutra/master/fleet"
)

// Issue 9 item 7: the CLI pages through lists of any length.
func TestCLIPagesThroughLists(t *testing.T) {
	m := startMaster(t)
	const n = 1234
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				id := fmt.Sprintf("a%04d", i)
				_, err := m.f.Register(context.Background(), fleet.Registration{AgentID: id, Hostname: id + ".lan", Platform: "linux", Arch: "x86_64", MaxStorageNodes: 1,
					Nodes: []fleet.NodeStatus{{NodeID: id + "-n", State: fleet.NodeRunning, PID: 7}}})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	r := m.sutra(t, "agents", "-o", "json")
	r.want(t, 0)
	var agents []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &agents); err != nil || len(agents) != n || agents[n-1]["agent_id"] != "a1233" {
		t.Fatalf("agents -o json: %d agents (%v), want %d ending with a1233", len(agents), err, n)
	}
	r = m.sutra(t, "agents")
	r.want(t, 0, "a0000", "a1233.lan")
	if lines := strings.Count(r.stdout, "\n"); lines != n+1 {
		t.Fatalf("agents table has %d lines, want header + %d", lines, n)
	}
	r = m.sutra(t, "nodes", "-o", "json")
	r.want(t, 0)
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil || len(nodes) != n {
		t.Fatalf("nodes -o json: %d nodes (%v), want %d", len(nodes), err, n)
	}
	r = m.sutra(t, "nodes")
	r.want(t, 0, "a0000-n", "a1233-n")
	if lines := strings.Count(r.stdout, "\n"); lines != n+1 {
		t.Fatalf("nodes table has %d lines, want header + %d", lines, n)
	}
}

// Issue 9 item 15: sutra agents rm, refused for a live agent without --force.
func TestCLIAgentsRemove(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "live", 1)
	if _, err := m.f.Register(context.Background(), fleet.Registration{AgentID: "gone", Hostname: "gone.lan", Platform: "linux", Arch: "x86_64", MaxStorageNodes: 1}); err != nil {
		t.Fatal(err)
	}

	r := m.sutra(t, "agents", "rm", "live")
	r.want(t, 1)
	if !strings.Contains(r.stderr, `agent "live" is healthy`) || !strings.Contains(r.stderr, "--force") || !strings.Contains(r.stderr, "live.lan") {
		t.Fatalf("agents rm live: stderr %q, want it to say the agent is healthy and suggest --force", r.stderr)
	}
	m.sutra(t, "agents", "live").want(t, 0, "live")

	r = m.sutra(t, "agents", "rm", "ghost")
	r.want(t, 3)
	m.sutra(t, "agents", "rm").want(t, 2)
	m.sutra(t, "agents", "rm", "a", "b").want(t, 2)

	// "gone" stopped heartbeating but is not offline yet (30 s on the real
	// clock): --force removes it.
	r = m.sutra(t, "agents", "rm", "--force", "gone")
	r.want(t, 0, "agent gone removed")
	r = m.sutra(t, "agents", "gone")
	r.want(t, 3)
	r = m.sutra(t, "-o", "json", "agents", "rm", "live", "--force")
	r.want(t, 0, `"removed": true`)
	r = m.sutra(t, "events", "-n", "10")
	r.want(t, 0, "AgentUnregistered")
}
