package fleet

import (
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// Health is an agent's liveness as the master sees it.
type Health string

// Agent health values.
const (
	Healthy  Health = "healthy"
	Degraded Health = "degraded"
	Offline  Health = "offline"
)

// ClusterHealth summarises the fleet.
type ClusterHealth string

// Cluster health values, as the original Sutra master defined them: critical
// when agents exist and none is healthy, degraded when fewer than half are
// healthy, healthy otherwise (including an empty fleet).
const (
	ClusterHealthy  ClusterHealth = "healthy"
	ClusterDegraded ClusterHealth = "degraded"
	ClusterCritical ClusterHealth = "critical"
)

// NodeState is the life-cycle state of a storage node as its agent reports it.
type NodeState string

// Node states of the contract.
const (
	NodeStarting NodeState = "starting"
	NodeRunning  NodeState = "running"
	NodeStopping NodeState = "stopping"
	NodeStopped  NodeState = "stopped"
	NodeFailed   NodeState = "failed"
	NodeBackoff  NodeState = "backoff"
)

// ValidNodeState reports whether s is one of the contract's node states.
func ValidNodeState(s NodeState) bool {
	switch s {
	case NodeStarting, NodeRunning, NodeStopping, NodeStopped, NodeFailed, NodeBackoff:
		return true
	}
	return false
}

// NodeStatus is the actual state of one node, as last reported by its agent.
type NodeStatus struct {
	NodeID       string    `json:"node_id"`
	State        NodeState `json:"state"`
	PID          int64     `json:"pid,omitempty"`
	Endpoint     string    `json:"endpoint,omitempty"`
	Version      string    `json:"version,omitempty"`
	RestartCount uint32    `json:"restart_count"`
	LastExit     string    `json:"last_exit,omitempty"`
	Since        time.Time `json:"since,omitzero"`
	LastLogLines []string  `json:"last_log_lines,omitempty"`
	Message      string    `json:"message,omitempty"`
}

// UpgradeStatus is the progress of an agent self-update.
type UpgradeStatus struct {
	Phase        string    `json:"phase"`
	FromVersion  string    `json:"from_version,omitempty"`
	ToVersion    string    `json:"to_version,omitempty"`
	Message      string    `json:"message,omitempty"`
	LastLogLines []string  `json:"last_log_lines,omitempty"`
	Updated      time.Time `json:"updated,omitzero"`
}

// DesiredNode is one node an agent should run.
type DesiredNode struct {
	NodeID string `json:"node_id"`
	// Port is fixed by the operator, or 0 for "the agent's choice".
	Port uint32 `json:"port,omitempty"`
}

// Desired is the state the master wants an agent in.
type Desired struct {
	// Generation is bumped on every change of this agent's desired state.
	Generation uint64        `json:"generation"`
	Nodes      []DesiredNode `json:"nodes"`
	// StorageServerVersion is "latest" or an exact version.
	StorageServerVersion string `json:"storage_server_version"`
	// AgentVersion is empty (no update wanted), "latest" or an exact version.
	AgentVersion string `json:"agent_version,omitempty"`
}

// Agent is the master's view of one agent.
type Agent struct {
	ID              string            `json:"agent_id"`
	Hostname        string            `json:"hostname"`
	Platform        string            `json:"platform"`
	Arch            string            `json:"arch"`
	AgentVersion    string            `json:"agent_version"`
	MaxStorageNodes uint32            `json:"max_storage_nodes"`
	Labels          map[string]string `json:"labels,omitempty"`
	Health          Health            `json:"health"`
	RegisteredAt    time.Time         `json:"registered_at"`
	// InstanceID is the random id the agent keeps in its data dir (empty
	// for agents that predate it).
	InstanceID string `json:"instance_id,omitempty"`
	// LastHeartbeat is zero until the agent's first heartbeat or registration
	// seen by this master process or persisted by an earlier one.
	LastHeartbeat     time.Time      `json:"last_heartbeat,omitzero"`
	Desired           Desired        `json:"desired"`
	AppliedGeneration uint64         `json:"applied_generation"`
	Nodes             []NodeStatus   `json:"nodes"`
	Upgrade           *UpgradeStatus `json:"upgrade,omitempty"`
	// Revoked is set while an operator's revocation of the agent's
	// certificates stands (sutra agents revoke): its calls are refused.
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
	// Pins maps an artifact ("storage-server", "sutra-agent") to the
	// version the agent is pinned to (sutra agents pin): SetDesiredVersion
	// refuses it for this agent, skips it for every agent, and rollouts
	// skip the agent.
	Pins map[string]string `json:"pins,omitempty"`
	// Master is the id of the master the agent last registered or
	// heartbeated with (several masters on one store).
	Master string `json:"master,omitempty"`
}

// Node joins a node the master knows with the status its agent last reported.
type Node struct {
	ID      string `json:"node_id"`
	AgentID string `json:"agent_id"`
	Port    uint32 `json:"port,omitempty"`
	// Desired is false once a stop was requested (or for a node the agent
	// reports but the master never asked for); the record goes away when the
	// agent reports the node stopped or no longer reports it.
	Desired   bool        `json:"desired"`
	Status    *NodeStatus `json:"status,omitempty"`
	CreatedAt time.Time   `json:"created_at"`
	// StopGeneration is the agent generation that dropped the node from the
	// desired state (0 while desired).
	StopGeneration uint64 `json:"stop_generation,omitempty"`

	// rev is the store revision the record was read or written at (in
	// memory only; zero in copies handed out).
	rev store.Revision
}

// ClusterStatus summarises the fleet.
type ClusterStatus struct {
	Status         ClusterHealth `json:"status"`
	TotalAgents    int           `json:"total_agents"`
	HealthyAgents  int           `json:"healthy_agents"`
	DegradedAgents int           `json:"degraded_agents"`
	OfflineAgents  int           `json:"offline_agents"`
	// TotalNodes counts desired nodes; RunningNodes and FailedNodes count
	// desired nodes by their last reported state.
	TotalNodes    int    `json:"total_nodes"`
	RunningNodes  int    `json:"running_nodes"`
	FailedNodes   int    `json:"failed_nodes"`
	MasterVersion string `json:"master_version"`
}

// Event is one entry of the fleet's bounded, persisted event log.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	AgentID string    `json:"agent_id,omitempty"`
	NodeID  string    `json:"node_id,omitempty"`
	Message string    `json:"message,omitempty"`
	// Actor is who caused it (master/actor): "operator@<ip>",
	// "agent:<id>", "token:<id>" or "master".
	Actor string `json:"actor,omitempty"`
}

// Event types.
const (
	EventAgentRegistered   = "AgentRegistered"
	EventAgentDegraded     = "AgentDegraded"
	EventAgentOffline      = "AgentOffline"
	EventAgentRecovered    = "AgentRecovered"
	EventAgentUnregistered = "AgentUnregistered"
	// EventAgentRemoved: removed by the master after being offline longer
	// than Options.AgentGCThreshold.
	EventAgentRemoved       = "AgentRemoved"
	EventAgentUpgrade       = "AgentUpgrade"
	EventDesiredVersion     = "DesiredVersionSet"
	EventNodeSpawnRequested = "NodeSpawnRequested"
	EventNodeStopRequested  = "NodeStopRequested"
	EventNodeAdopted        = "NodeAdopted"
	EventNodeRunning        = "NodeRunning"
	EventNodeCrashed        = "NodeCrashed"
	EventNodeRestarted      = "NodeRestarted"
	EventNodeBackoff        = "NodeBackoff"
	EventNodeFailed         = "NodeFailed"
	EventNodeStopped        = "NodeStopped"

	// Trust events (issue 12), recorded by the enrollment service through
	// Record; their messages name who did it (a token id, an operator).
	EventAgentEnrolled     = "AgentEnrolled"
	EventCertRenewed       = "CertificateRenewed"
	EventJoinTokenCreated  = "JoinTokenCreated"
	EventJoinTokenRemoved  = "JoinTokenRemoved"
	EventEnrollmentRefused = "EnrollmentRefused"
	// EventAgentRevoked and EventAgentUnrevoked: an operator revoked an
	// agent's certificates, or lifted the revocation (revoke.go).
	EventAgentRevoked   = "AgentRevoked"
	EventAgentUnrevoked = "AgentUnrevoked"
)

// Registration is what an agent announces in RegisterAgent.
type Registration struct {
	AgentID         string
	Hostname        string
	Platform        string
	Arch            string
	AgentVersion    string
	MaxStorageNodes uint32
	Labels          map[string]string
	// InstanceID is the random id the agent persists in its data dir; empty
	// from agents that predate it. A registration whose instance id differs
	// from the recorded one is refused while the recorded agent is alive.
	InstanceID string
	// Nodes the agent already runs.
	Nodes   []NodeStatus
	Upgrade *UpgradeStatus
}

// Report is what an agent tells the master in a heartbeat.
type Report struct {
	AgentID           string
	AppliedGeneration uint64
	Nodes             []NodeStatus
	AgentVersion      string
	Upgrade           *UpgradeStatus
}

// SpawnRequest asks for a new desired node.
type SpawnRequest struct {
	// AgentID is optional: empty lets the master place the node.
	AgentID string
	// NodeID is optional: empty makes the master generate one.
	NodeID string
	// Port is optional: 0 lets the agent choose.
	Port uint32
}

// VersionChange sets the desired versions of one agent or all agents.
type VersionChange struct {
	// AgentID empty means every agent, and the default for agents that register later.
	AgentID string
	// StorageServerVersion and AgentVersion: empty leaves the value unchanged,
	// otherwise "latest" or an exact semantic version.
	StorageServerVersion string
	AgentVersion         string
}
