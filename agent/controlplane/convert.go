package controlplane

import (
	"unicode/utf8"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// The master rejects a whole report when one node field is longer than these
// (master/fleet: 256 bytes, 1 KiB for the message), so long texts such as a
// start error that quotes two checksums are shortened here instead of keeping
// the agent from heartbeating.
const (
	maxFieldLen   = 256
	maxMessageLen = 1024
)

// clip shortens s to at most n bytes on a UTF-8 boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

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
			Endpoint:     clip(n.Endpoint, maxFieldLen),
			Version:      clip(n.Version, maxFieldLen),
			RestartCount: uint32(max(n.RestartCount, 0)),
			LastExit:     clip(n.LastExit, maxFieldLen),
			SinceUnix:    since,
			LastLogLines: n.LastLogLines,
			Message:      clip(n.Message, maxMessageLen),
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
