// Package controlplane is the agent's side of the grid's gRPC contract: it
// registers the agent with the master, heartbeats on the interval the master
// gives, reports the actual state of the agent's nodes and hands the master's
// desired state to the agent.
//
// It is the only agent package that imports the generated protobuf code; the
// rest of the agent sees the plain Go types below. A node's state is the
// supervisor's own (supervisor.State); nodeStates in convert.go is the one
// place it becomes the wire's NodeState.
//
// The master is never required to be up: registration is retried forever with
// exponential backoff and full jitter, a heartbeat that cannot reach the master
// is simply retried on the next tick, and a NOT_FOUND answer (the master forgot
// the agent, or was rebuilt) triggers a fresh registration. Nothing here stops or
// starts nodes; losing the master never touches what runs.
//
// With several masters (issue 16; Options.MasterAddr lists them), the agent
// talks to one at a time, stays with it while it works and moves to
// another, chosen at random, when it becomes unreachable (failover.go).
package controlplane

import (
	"time"

	"github.com/sutragrid/sutra/supervisor"
)

// NodeStatus is the actual state of one node.
type NodeStatus struct {
	NodeID string
	// State is the supervisor's state of the node; nodeStateToProto is the
	// one place it becomes the wire's NodeState.
	State        supervisor.State
	PID          int
	Endpoint     string
	Version      string
	RestartCount int
	LastExit     string
	Since        time.Time
	LastLogLines []string
	Message      string
}

// UpgradeStatus is the progress of an agent self-update.
type UpgradeStatus struct {
	Phase        string
	FromVersion  string
	ToVersion    string
	Message      string
	LastLogLines []string
	Updated      time.Time
}

// Report is what the agent tells the master in each heartbeat.
type Report struct {
	AppliedGeneration uint64
	Nodes             []NodeStatus
	Upgrade           *UpgradeStatus
}

// DesiredNode is one node the master wants this agent to run.
type DesiredNode struct {
	NodeID string
	// Port is fixed by the operator, or 0 for "agent's choice".
	Port int
}

// Desired is the master's desired state for this agent.
type Desired struct {
	Generation uint64
	Nodes      []DesiredNode
	// StorageServerVersion is "latest" or an exact version.
	StorageServerVersion string
	// AgentVersion is empty (no update wanted), "latest" or an exact version.
	AgentVersion string
}
