package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/actor"
)

// Spawn adds a desired node. With no AgentID the node goes to the healthy
// agent with the most free capacity (ties: the smallest id).
func (f *Fleet) Spawn(ctx context.Context, r SpawnRequest) (Node, error) {
	if r.AgentID != "" {
		if err := validateKnownID("agent", r.AgentID); err != nil {
			return Node{}, err
		}
	}
	if r.NodeID != "" {
		if err := ValidateID("node", r.NodeID); err != nil {
			return Node{}, err
		}
	}
	if r.Port > 65535 {
		return Node{}, newErr(KindInvalid, "port %d is out of range: use 1-65535, or 0 to let the agent choose", r.Port)
	}
	var out Node
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		f.mu.Lock()
		defer f.mu.Unlock()
		if other := f.nodes[r.NodeID]; r.NodeID != "" && other != nil {
			return nil, newErr(KindExists, "node %q already exists on agent %q: choose another id, or omit it to get a generated one", r.NodeID, other.AgentID)
		}
		if n := len(f.nodes); n >= f.opts.MaxNodes {
			return nil, newErr(KindExhausted, "the fleet already holds %d node records, the master's limit: stop nodes, remove offline agents (sutra agents rm ID) or raise --max-nodes (MAX_NODES)", n)
		}
		a, err := f.placeLocked(r.AgentID)
		if err != nil {
			return nil, err
		}
		id := r.NodeID
		if id == "" {
			id = f.newNodeIDLocked()
		}
		if r.Port != 0 {
			for _, n := range a.nodes {
				if n.Desired && n.Port == r.Port {
					return nil, newErr(KindExists, "port %d is already given to node %q on agent %q: choose another port or 0", r.Port, n.ID, a.rec.ID)
				}
			}
		}
		tx := txn{actor: actor.From(ctx)}
		n := &Node{ID: id, AgentID: a.rec.ID, Port: r.Port, Desired: true, CreatedAt: now}
		f.nodes[id], a.nodes[id] = n, n
		a.rec.Generation++
		tx.putNode(n)
		tx.putAgent(&a.rec)
		f.emit(&tx, now, EventNodeSpawnRequested, a.rec.ID, id, fmt.Sprintf("generation %d", a.rec.Generation))
		out = copyNode(n)
		return f.enqueue(&tx), nil
	})
	if err != nil {
		return Node{}, err
	}
	f.log.Info("node spawn requested", "node", out.ID, "agent", out.AgentID)
	return out, nil
}

func desiredCount(a *agentState) int {
	c := 0
	for _, n := range a.nodes {
		if n.Desired {
			c++
		}
	}
	return c
}

// placeLocked picks the agent for a new node; the caller holds f.mu.
func (f *Fleet) placeLocked(agentID string) (*agentState, error) {
	if agentID != "" {
		a := f.agents[agentID]
		if a == nil {
			return nil, unknownAgent(agentID)
		}
		if a.health == Offline {
			return nil, newErr(KindPrecondition, "agent %q is offline (no heartbeat since %s): start it, pick another agent, or omit the agent to let the master place the node", agentID, a.lastSeen.UTC().Format("2006-01-02 15:04:05Z"))
		}
		if used := desiredCount(a); used >= int(a.rec.MaxStorageNodes) {
			return nil, newErr(KindExhausted, "agent %q already has %d of %d storage nodes: stop a node, raise max_storage_nodes in its config, or pick another agent", agentID, used, a.rec.MaxStorageNodes)
		}
		if len(a.nodes) >= limits.MaxNodesPerAgent {
			return nil, newErr(KindExhausted, "agent %q holds %d node records, the limit, most of them stopping but not yet confirmed by the agent: wait for its heartbeats, or pick another agent", agentID, len(a.nodes))
		}
		return a, nil
	}
	var best *agentState
	bestFree, healthy := 0, 0
	for _, a := range f.agents {
		if a.health != Healthy {
			continue
		}
		healthy++
		free := int(a.rec.MaxStorageNodes) - desiredCount(a)
		if free <= 0 || len(a.nodes) >= limits.MaxNodesPerAgent {
			continue
		}
		if best == nil || free > bestFree || free == bestFree && a.rec.ID < best.rec.ID {
			best, bestFree = a, free
		}
	}
	if best != nil {
		return best, nil
	}
	if healthy == 0 {
		return nil, newErr(KindPrecondition, "no healthy agent to place the node on: start an agent (check with `sutra agents`) or name one with --agent")
	}
	return nil, newErr(KindExhausted, "all %d healthy agents are at max_storage_nodes: stop nodes, raise max_storage_nodes, or add agents", healthy)
}

func (f *Fleet) newNodeIDLocked() string {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		id := "node-" + hex.EncodeToString(b[:])
		if f.nodes[id] == nil {
			return id
		}
	}
}

// Stop removes a node from its agent's desired state. The record stays,
// with Desired false, until the agent reports the node stopped. Stopping a
// node already being stopped is not an error.
func (f *Fleet) Stop(ctx context.Context, nodeID string) (Node, error) {
	if err := validateKnownID("node", nodeID); err != nil {
		return Node{}, err
	}
	var out Node
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		f.mu.Lock()
		defer f.mu.Unlock()
		n := f.nodes[nodeID]
		if n == nil {
			return nil, unknownNode(nodeID)
		}
		if !n.Desired {
			out = copyNode(n)
			return nil, nil
		}
		a := f.agents[n.AgentID]
		tx := txn{actor: actor.From(ctx)}
		a.rec.Generation++
		n.Desired, n.StopGeneration = false, a.rec.Generation
		tx.putNode(n)
		tx.putAgent(&a.rec)
		f.emit(&tx, now, EventNodeStopRequested, a.rec.ID, nodeID, fmt.Sprintf("generation %d", a.rec.Generation))
		out = copyNode(n)
		return f.enqueue(&tx), nil
	})
	if err != nil {
		return Node{}, err
	}
	f.log.Info("node stop requested", "node", nodeID, "agent", out.AgentID)
	return out, nil
}

func unknownNode(id string) error {
	return newErr(KindNotFound, "node %q is not known to the master: list nodes with `sutra nodes`", id)
}

func copyNode(n *Node) Node {
	out := *n
	out.rev = 0
	if n.Status != nil {
		s := *n.Status
		s.LastLogLines = slices.Clone(s.LastLogLines)
		out.Status = &s
	}
	return out
}

// Node returns one node.
func (f *Fleet) Node(id string) (Node, error) {
	if err := validateKnownID("node", id); err != nil {
		return Node{}, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := f.nodes[id]
	if n == nil {
		return Node{}, unknownNode(id)
	}
	return copyNode(n), nil
}

// Nodes returns every node record (of one agent, when agentID is not
// empty), sorted by agent then node id.
func (f *Fleet) Nodes(agentID string) ([]Node, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Node
	if agentID != "" {
		if err := validateKnownID("agent", agentID); err != nil {
			return nil, err
		}
		a := f.agents[agentID]
		if a == nil {
			return nil, unknownAgent(agentID)
		}
		for _, n := range a.nodes {
			out = append(out, copyNode(n))
		}
	} else {
		for _, n := range f.nodes {
			out = append(out, copyNode(n))
		}
	}
	slices.SortFunc(out, func(x, y Node) int {
		if c := strings.Compare(x.AgentID, y.AgentID); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	if out == nil {
		out = []Node{}
	}
	return out, nil
}
