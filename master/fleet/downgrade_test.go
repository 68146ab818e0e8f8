package fleet

import (
	"context"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/master/actor"
)

// An explicit version below what an agent runs is allowed and recorded as
// a downgrade event naming who asked; "latest" and upgrades are not.
func TestExplicitDowngradeIsAnEvent(t *testing.T) {
	e := newEnv(t)
	op := actor.With(context.Background(), "operator@10.0.0.7")
	e.register("a1", 2) // runs agent 0.1.0
	if _, err := e.f.Spawn(op, SpawnRequest{AgentID: "a1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	e.heartbeat("a1", 2, NodeStatus{NodeID: "n1", State: NodeRunning, PID: 7, Version: "1.2.0"})
	downgrades := func() []Event {
		var out []Event
		for _, ev := range e.f.Events(0, 0) {
			if ev.Type == EventDowngrade {
				out = append(out, ev)
			}
		}
		return out
	}
	for _, c := range []VersionChange{
		{AgentID: "a1", StorageServerVersion: "latest"},
		{AgentID: "a1", StorageServerVersion: "1.3.0"},
		{AgentID: "a1", AgentVersion: "0.2.0"},
	} {
		if _, err := e.f.SetDesiredVersion(op, c); err != nil {
			t.Fatal(err)
		}
	}
	if d := downgrades(); len(d) != 0 {
		t.Fatalf("downgrade events for latest/upgrades: %+v", d)
	}
	if _, err := e.f.SetDesiredVersion(op, VersionChange{AgentID: "a1", StorageServerVersion: "1.1.0", AgentVersion: "0.0.9"}); err != nil {
		t.Fatalf("explicit downgrade refused: %v", err)
	}
	d := downgrades()
	if len(d) != 2 {
		t.Fatalf("downgrade events = %+v, want 2 (storage-server and agent)", d)
	}
	for _, ev := range d {
		if ev.Actor != "operator@10.0.0.7" || ev.AgentID != "a1" {
			t.Errorf("event %+v does not name the operator and agent", ev)
		}
	}
	if !strings.Contains(d[0].Message+d[1].Message, "storage-server 1.1.0 asked while nodes run 1.2.0") {
		t.Errorf("messages %q / %q", d[0].Message, d[1].Message)
	}
}
