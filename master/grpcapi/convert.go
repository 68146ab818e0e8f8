package grpcapi

import (
	"fmt"
	"time"

	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/fleet"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// stateFromPB is the one mapping between the wire's node states and the
// fleet's (whose strings are also the fleet HTTP API's JSON spelling);
// stateToPB is its inverse.
var stateFromPB = map[gridv1.NodeState]fleet.NodeState{
	gridv1.NodeState_NODE_STATE_STARTING: fleet.NodeStarting,
	gridv1.NodeState_NODE_STATE_RUNNING:  fleet.NodeRunning,
	gridv1.NodeState_NODE_STATE_STOPPING: fleet.NodeStopping,
	gridv1.NodeState_NODE_STATE_STOPPED:  fleet.NodeStopped,
	gridv1.NodeState_NODE_STATE_FAILED:   fleet.NodeFailed,
	gridv1.NodeState_NODE_STATE_BACKOFF:  fleet.NodeBackoff,
}

var stateToPB = func() map[fleet.NodeState]gridv1.NodeState {
	m := map[fleet.NodeState]gridv1.NodeState{}
	for k, v := range stateFromPB {
		m[v] = k
	}
	return m
}()

func unixOrZero(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// pageFromPB clips the page size (the fleet clips it again to its maximum).
func pageFromPB(size uint32, token string) fleet.Page {
	return fleet.Page{Size: int(min(size, fleet.MaxPageSize)), Token: token}
}

// nodeStatusesFromPB converts a report's node statuses; a state that is not
// one of the contract's (UNSPECIFIED, or a number from a newer agent) is
// refused here, as the fleet refuses any other invalid field.
func nodeStatusesFromPB(in []*gridv1.NodeStatus) ([]fleet.NodeStatus, error) {
	out := make([]fleet.NodeStatus, 0, len(in))
	for _, n := range in {
		st, ok := stateFromPB[n.GetState()]
		if !ok {
			return nil, &fleet.Error{Kind: fleet.KindInvalid, Msg: fmt.Sprintf("node %.64q has state %s: use starting, running, stopping, stopped, failed or backoff",
				n.GetNodeId(), n.GetState())}
		}
		out = append(out, fleet.NodeStatus{
			NodeID: n.GetNodeId(), State: st, PID: n.GetPid(), Endpoint: n.GetEndpoint(), Version: n.GetVersion(),
			RestartCount: n.GetRestartCount(), LastExit: n.GetLastExit(), Since: unixOrZero(n.GetSinceUnix()),
			LastLogLines: n.GetLastLogLines(), Message: n.GetMessage(),
		})
	}
	return out, nil
}

func nodeStatusToPB(n fleet.NodeStatus) *gridv1.NodeStatus {
	return &gridv1.NodeStatus{
		NodeId: n.NodeID, State: stateToPB[n.State], Pid: n.PID, Endpoint: n.Endpoint, Version: n.Version,
		RestartCount: n.RestartCount, LastExit: n.LastExit, SinceUnix: unix(n.Since),
		LastLogLines: n.LastLogLines, Message: n.Message,
	}
}

func upgradeFromPB(u *gridv1.UpgradeStatus) *fleet.UpgradeStatus {
	if u == nil || u.GetPhase() == "" {
		return nil
	}
	return &fleet.UpgradeStatus{
		Phase: u.GetPhase(), FromVersion: u.GetFromVersion(), ToVersion: u.GetToVersion(), Message: u.GetMessage(),
		LastLogLines: u.GetLastLogLines(), Updated: unixOrZero(u.GetUpdatedUnix()),
	}
}

func upgradeToPB(u *fleet.UpgradeStatus) *gridv1.UpgradeStatus {
	if u == nil {
		return nil
	}
	return &gridv1.UpgradeStatus{
		Phase: u.Phase, FromVersion: u.FromVersion, ToVersion: u.ToVersion, Message: u.Message,
		LastLogLines: u.LastLogLines, UpdatedUnix: unix(u.Updated),
	}
}

func desiredToPB(d fleet.Desired) *gridv1.DesiredState {
	out := &gridv1.DesiredState{
		Generation: d.Generation, StorageServerVersion: d.StorageServerVersion, AgentVersion: d.AgentVersion,
		Nodes: make([]*gridv1.DesiredNode, 0, len(d.Nodes)),
	}
	for _, n := range d.Nodes {
		out.Nodes = append(out.Nodes, &gridv1.DesiredNode{NodeId: n.NodeID, Port: n.Port})
	}
	return out
}

var healthToPB = map[fleet.Health]gridv1.AgentHealth{
	fleet.Healthy:  gridv1.AgentHealth_AGENT_HEALTH_HEALTHY,
	fleet.Degraded: gridv1.AgentHealth_AGENT_HEALTH_DEGRADED,
	fleet.Offline:  gridv1.AgentHealth_AGENT_HEALTH_OFFLINE,
}

func agentToPB(a fleet.Agent) *gridv1.Agent {
	out := &gridv1.Agent{
		AgentId: a.ID, Hostname: a.Hostname, Platform: a.Platform, Arch: a.Arch, AgentVersion: a.AgentVersion,
		MaxStorageNodes: a.MaxStorageNodes, Labels: a.Labels, Health: healthToPB[a.Health],
		RegisteredUnix: unix(a.RegisteredAt), LastHeartbeatUnix: unix(a.LastHeartbeat),
		Desired: desiredToPB(a.Desired), AppliedGeneration: a.AppliedGeneration, Upgrade: upgradeToPB(a.Upgrade),
		Master: a.Master,
	}
	for _, n := range a.Nodes {
		out.Nodes = append(out.Nodes, nodeStatusToPB(n))
	}
	if a.Revoked {
		out.Revoked, out.RevokedUnix, out.RevokedBy = true, unix(a.RevokedAt), a.RevokedBy
	}
	out.Pins = a.Pins
	return out
}

func nodeToPB(n fleet.Node) *gridv1.StorageNode {
	out := &gridv1.StorageNode{NodeId: n.ID, AgentId: n.AgentID, Desired: n.Desired, CreatedUnix: unix(n.CreatedAt)}
	if n.Status != nil {
		out.Status = nodeStatusToPB(*n.Status)
	}
	return out
}

var clusterToPBHealth = map[fleet.ClusterHealth]gridv1.ClusterHealth{
	fleet.ClusterHealthy:  gridv1.ClusterHealth_CLUSTER_HEALTH_HEALTHY,
	fleet.ClusterDegraded: gridv1.ClusterHealth_CLUSTER_HEALTH_DEGRADED,
	fleet.ClusterCritical: gridv1.ClusterHealth_CLUSTER_HEALTH_CRITICAL,
}

func clusterToPB(c fleet.ClusterStatus) *gridv1.ClusterStatus {
	return &gridv1.ClusterStatus{
		Status: clusterToPBHealth[c.Status], TotalAgents: uint32(c.TotalAgents), HealthyAgents: uint32(c.HealthyAgents),
		DegradedAgents: uint32(c.DegradedAgents), OfflineAgents: uint32(c.OfflineAgents), TotalNodes: uint32(c.TotalNodes),
		RunningNodes: uint32(c.RunningNodes), FailedNodes: uint32(c.FailedNodes), MasterVersion: c.MasterVersion,
	}
}

// addClusterStatus adds the masters, the leader and the store's health.
func addClusterStatus(out *gridv1.ClusterStatus, cs cluster.Status) {
	out.Leader = cs.Leader
	for _, m := range cs.Masters {
		out.Masters = append(out.Masters, &gridv1.MasterInfo{Id: m.ID, GrpcAddr: m.GRPCAddr, HttpUrl: m.HTTPURL, Version: m.Version,
			StartedUnixMs: m.Started.UnixMilli(), Leader: m.Leader})
	}
	h := &gridv1.StoreHealth{Backend: cs.Store.Backend, Ok: cs.Store.OK, Detail: cs.Store.Detail}
	for _, m := range cs.Store.Members {
		h.Members = append(h.Members, &gridv1.StoreMember{Endpoint: m.Endpoint, Ok: m.OK, Leader: m.Leader, DbSizeBytes: m.DBSizeBytes, Version: m.Version, Error: m.Error})
	}
	out.Store = h
}

func eventToPB(e fleet.Event) *gridv1.Event {
	return &gridv1.Event{Seq: e.Seq, TimeUnixMs: e.Time.UnixMilli(), Type: e.Type, AgentId: e.AgentID, NodeId: e.NodeID, Message: e.Message, Actor: e.Actor}
}
