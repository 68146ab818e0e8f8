package rollout

import (
	"testing"

	"github.com/sutragrid/sutra/master/fleet"
)

func TestJudge(t *testing.T) {
	since := t0
	up := func(phase, to string) *fleet.UpgradeStatus {
		return &fleet.UpgradeStatus{Phase: phase, ToVersion: to, Updated: t0.Add(1), LastLogLines: []string{"boom"}}
	}
	node := func(state fleet.NodeState, v, msg string) []fleet.NodeStatus {
		return []fleet.NodeStatus{{NodeID: "n", State: state, Version: v, Message: msg}}
	}
	ss := fleet.Desired{Generation: 2, StorageServerVersion: "2.0.0"}
	for _, tc := range []struct {
		name     string
		artifact string
		a        fleet.Agent
		want     health
	}{
		{"agent committed", ArtifactAgent, fleet.Agent{AgentVersion: "2.0.0", Health: fleet.Healthy, Upgrade: up("committed", "2.0.0")}, healthy},
		{"agent watching", ArtifactAgent, fleet.Agent{AgentVersion: "2.0.0", Health: fleet.Healthy, Upgrade: up("watching", "2.0.0")}, notYet},
		{"agent rolled back", ArtifactAgent, fleet.Agent{AgentVersion: "1.0.0", Health: fleet.Healthy, Upgrade: up("rolled_back", "2.0.0")}, broken},
		{"agent failed", ArtifactAgent, fleet.Agent{AgentVersion: "1.0.0", Health: fleet.Healthy, Upgrade: up("failed", "2.0.0")}, broken},
		{"stale rollback of another attempt", ArtifactAgent, fleet.Agent{AgentVersion: "1.0.0", Upgrade: &fleet.UpgradeStatus{Phase: "rolled_back", ToVersion: "2.0.0", Updated: t0.Add(-1)}}, notYet},
		{"agent offline", ArtifactAgent, fleet.Agent{AgentVersion: "2.0.0", Health: fleet.Offline, Upgrade: up("committed", "2.0.0")}, notYet},
		{"nodes running new", ArtifactStorageServer, fleet.Agent{Health: fleet.Healthy, Desired: ss, AppliedGeneration: 2, Nodes: node(fleet.NodeRunning, "2.0.0", "")}, healthy},
		{"generation not applied", ArtifactStorageServer, fleet.Agent{Health: fleet.Healthy, Desired: ss, AppliedGeneration: 1, Nodes: node(fleet.NodeRunning, "2.0.0", "")}, notYet},
		{"node still old", ArtifactStorageServer, fleet.Agent{Health: fleet.Healthy, Desired: ss, AppliedGeneration: 2, Nodes: node(fleet.NodeRunning, "1.0.0", "")}, notYet},
		{"node backoff", ArtifactStorageServer, fleet.Agent{Health: fleet.Healthy, Desired: ss, AppliedGeneration: 2, Nodes: node(fleet.NodeBackoff, "2.0.0", "")}, notYet},
		{"node failed on new", ArtifactStorageServer, fleet.Agent{Health: fleet.Healthy, Desired: ss, AppliedGeneration: 2, Nodes: node(fleet.NodeFailed, "2.0.0", "")}, broken},
		{"node upgrade rolled back", ArtifactStorageServer, fleet.Agent{Health: fleet.Healthy, Desired: ss, AppliedGeneration: 2,
			Nodes: node(fleet.NodeRunning, "1.0.0", "upgrade to storage-server 2.0.0 failed and was rolled back to 1.0.0")}, broken},
		{"heartbeat stale", ArtifactStorageServer, fleet.Agent{Health: fleet.Degraded, Desired: ss, AppliedGeneration: 2, Nodes: node(fleet.NodeRunning, "2.0.0", "")}, notYet},
	} {
		if got, why, _ := judge(tc.a, tc.artifact, "2.0.0", since); got != tc.want {
			t.Errorf("%s: %d (%s), want %d", tc.name, got, why, tc.want)
		}
	}
}
