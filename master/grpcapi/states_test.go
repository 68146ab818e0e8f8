package grpcapi

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/sutragrid/sutra/master/fleet"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Every wire state but UNSPECIFIED has exactly one fleet state, valid for the
// fleet, and back.
func TestEveryWireStateIsMapped(t *testing.T) {
	for v, name := range gridv1.NodeState_name {
		pb := gridv1.NodeState(v)
		st, ok := stateFromPB[pb]
		if pb == gridv1.NodeState_NODE_STATE_UNSPECIFIED {
			if ok {
				t.Errorf("UNSPECIFIED maps to fleet state %q, want it refused", st)
			}
			continue
		}
		if !ok || !fleet.ValidNodeState(st) {
			t.Errorf("wire state %s maps to %q (%v): add it to stateFromPB and to the fleet's states", name, st, ok)
			continue
		}
		if back := stateToPB[st]; back != pb {
			t.Errorf("fleet state %q goes back to %s, want %s", st, back, name)
		}
	}
	if len(stateToPB) != len(stateFromPB) {
		t.Errorf("stateFromPB maps two wire states to one fleet state: %v", stateFromPB)
	}
}

// A report with a node state outside the contract is refused as a whole,
// naming the node and the state; nothing reaches the fleet.
func TestUnknownNodeStateIsInvalidArgument(t *testing.T) {
	h := start(t)
	h.register(t, "a1", 2)
	for _, st := range []gridv1.NodeState{gridv1.NodeState_NODE_STATE_UNSPECIFIED, gridv1.NodeState(99)} {
		nodes := []*gridv1.NodeStatus{{NodeId: "n1", State: gridv1.NodeState_NODE_STATE_RUNNING}, {NodeId: "n2", State: st}}
		_, err := h.client.Heartbeat(ctxT(t), &gridv1.HeartbeatRequest{AgentId: "a1", Nodes: nodes})
		wantCode(t, "Heartbeat with state "+st.String(), err, codes.InvalidArgument, `node "n2" has state `+st.String())
		_, err = h.client.RegisterAgent(ctxT(t), &gridv1.RegisterAgentRequest{
			AgentId: "a2", Platform: "linux", Arch: "x86_64", MaxStorageNodes: 2, Nodes: nodes,
		})
		wantCode(t, "RegisterAgent with state "+st.String(), err, codes.InvalidArgument, `node "n2" has state `+st.String())
	}
	a, err := h.f.Agent("a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Nodes) != 0 {
		t.Errorf("agent a1 has node statuses %+v after refused reports, want none", a.Nodes)
	}
}
