package controlplane

import (
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

var nodeStateToProto = map[NodeState]gridv1.NodeState{
	NodeStarting: gridv1.NodeState_NODE_STATE_STARTING,
	NodeRunning:  gridv1.NodeState_NODE_STATE_RUNNING,
	NodeStopping: gridv1.NodeState_NODE_STATE_STOPPING,
	NodeStopped:  gridv1.NodeState_NODE_STATE_STOPPED,
	NodeFailed:   gridv1.NodeState_NODE_STATE_FAILED,
	NodeBackoff:  gridv1.NodeState_NODE_STATE_BACKOFF,
}

func nodesToProto(nodes []NodeStatus) []*gridv1.NodeStatus {
	out := make([]*gridv1.NodeStatus, 0, len(nodes))
	for _, n := range nodes {
		var since int64
		if !n.Since.IsZero() {
			since = n.Since.Unix()
		}
		out = append(out, &gridv1.NodeStatus{
			NodeId:       n.NodeID,
			State:        nodeStateToProto[n.State],
			Pid:          int64(n.PID),
			Endpoint:     n.Endpoint,
			Version:      n.Version,
			RestartCount: uint32(max(n.RestartCount, 0)),
			LastExit:     n.LastExit,
			SinceUnix:    since,
			LastLogLines: n.LastLogLines,
			Message:      n.Message,
		})
	}
	return out
}

func upgradeToProto(u *UpgradeStatus) *gridv1.UpgradeStatus {
	if u == nil {
		return nil
	}
	var updated int64
	if !u.Updated.IsZero() {
		updated = u.Updated.Unix()
	}
	return &gridv1.UpgradeStatus{
		Phase:        u.Phase,
		FromVersion:  u.FromVersion,
		ToVersion:    u.ToVersion,
		Message:      u.Message,
		LastLogLines: u.LastLogLines,
		UpdatedUnix:  updated,
	}
}

func desiredFromProto(d *gridv1.DesiredState) Desired {
	out := Desired{
		Generation:           d.GetGeneration(),
		StorageServerVersion: d.GetStorageServerVersion(),
		AgentVersion:         d.GetAgentVersion(),
	}
	if out.StorageServerVersion == "" {
		out.StorageServerVersion = "latest"
	}
	for _, n := range d.GetNodes() {
		out.Nodes = append(out.Nodes, DesiredNode{NodeID: n.GetNodeId(), Port: int(n.GetPort())})
	}
	return out
}
