package controlplane

import (
	"time"

	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/limits"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"github.com/sutragrid/sutra/supervisor"
)

// The master refuses a whole report when one field is beyond the limits of
// internal/limits (a long text, a pid out of range, a time it cannot store),
// so everything is clipped to them here instead of keeping the agent from
// heartbeating: texts are cut on a UTF-8 boundary with "…", control
// characters in one-line texts become spaces, numbers are clamped, an
// unrepresentable time is sent as unset, and the log lines of one report
// share a budget of limits.MaxReportLogBytes (newest lines kept).
const (
	maxFieldLen   = limits.MaxTextLen
	maxMessageLen = limits.MaxMessageLen
)

// clip shortens s to at most n bytes on a UTF-8 boundary, marking the cut
// (the limits package's rule, so agent and master clip alike).
func clip(s string, n int) string { return limits.ClipMessage(s, n) }

// unixOrZero is t in Unix seconds, 0 for an unset time or one the master
// cannot store (a clock set to before 1970 or beyond year 9999).
func unixOrZero(t time.Time) int64 {
	if t.IsZero() || limits.Time("", t) != nil {
		return 0
	}
	return t.Unix()
}

// nodeStates is the one mapping of the supervisor's node states to the
// wire's (TestEverySupervisorStateIsMapped walks every supervisor.State).
var nodeStates = map[supervisor.State]gridv1.NodeState{
	supervisor.StateStarting: gridv1.NodeState_NODE_STATE_STARTING,
	supervisor.StateRunning:  gridv1.NodeState_NODE_STATE_RUNNING,
	supervisor.StateStopping: gridv1.NodeState_NODE_STATE_STOPPING,
	supervisor.StateStopped:  gridv1.NodeState_NODE_STATE_STOPPED,
	supervisor.StateFailed:   gridv1.NodeState_NODE_STATE_FAILED,
	supervisor.StateBackoff:  gridv1.NodeState_NODE_STATE_BACKOFF,
}

// nodeStateToProto returns the wire state of s; a state missing from
// nodeStates would be sent as UNSPECIFIED, which the master refuses.
func nodeStateToProto(s supervisor.State) gridv1.NodeState {
	return nodeStates[s]
}

func nodesToProto(nodes []NodeStatus) []*gridv1.NodeStatus {
	out := make([]*gridv1.NodeStatus, 0, len(nodes))
	budget := limits.MaxReportLogBytes
	for _, n := range nodes {
		out = append(out, &gridv1.NodeStatus{
			NodeId:       n.NodeID,
			State:        nodeStateToProto(n.State),
			Pid:          min(max(int64(n.PID), 0), limits.MaxPID),
			Endpoint:     limits.ClipText(n.Endpoint, maxFieldLen),
			Version:      clip(n.Version, limits.MaxVersionLen),
			RestartCount: uint32(min(max(n.RestartCount, 0), limits.MaxRestartCount)),
			LastExit:     limits.ClipText(n.LastExit, maxFieldLen),
			SinceUnix:    unixOrZero(n.Since),
			LastLogLines: limits.ClipLogLines(n.LastLogLines, &budget),
			Message:      limits.ClipMessage(n.Message, maxMessageLen),
		})
	}
	return out
}

func upgradeToProto(u *UpgradeStatus) *gridv1.UpgradeStatus {
	if u == nil {
		return nil
	}
	budget := limits.MaxReportLogBytes
	return &gridv1.UpgradeStatus{
		Phase:        u.Phase,
		FromVersion:  clip(u.FromVersion, limits.MaxVersionLen),
		ToVersion:    clip(u.ToVersion, limits.MaxVersionLen),
		Message:      limits.ClipMessage(u.Message, maxMessageLen),
		LastLogLines: limits.ClipLogLines(u.LastLogLines, &budget),
		UpdatedUnix:  unixOrZero(u.Updated),
	}
}

// desiredFromProto converts the master's desired state. A node id that
// breaks the id rule the master applies too (internal/ident: it names a data
// directory, so "..", "-rf" or a path are never accepted) is left out and
// returned in refused, so that a faulty master cannot make the agent write
// outside storage.data_path.
func desiredFromProto(d *gridv1.DesiredState) (out Desired, refused []string) {
	out = Desired{
		Generation:           d.GetGeneration(),
		StorageServerVersion: d.GetStorageServerVersion(),
		AgentVersion:         d.GetAgentVersion(),
	}
	if out.StorageServerVersion == "" {
		out.StorageServerVersion = "latest"
	}
	for _, n := range d.GetNodes() {
		if !ident.Valid(n.GetNodeId()) || n.GetPort() > limits.MaxPort {
			refused = append(refused, clip(n.GetNodeId(), 64))
			continue
		}
		out.Nodes = append(out.Nodes, DesiredNode{NodeID: n.GetNodeId(), Port: int(n.GetPort())})
	}
	return out, refused
}

// deliver hands the master's desired state to OnDesired, logging the nodes
// it had to leave out.
func (c *Client) deliver(d *gridv1.DesiredState) {
	out, refused := desiredFromProto(d)
	if len(refused) > 0 {
		c.opts.Logger.Error("master sent node ids this agent refuses to run (a path, \"..\", a leading '-' or a reserved name); ignoring them",
			"nodes", refused, "rule", ident.Charset, "generation", out.Generation)
	}
	c.opts.OnDesired(out)
}
