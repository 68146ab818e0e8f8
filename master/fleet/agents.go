package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/store"
)

// MaxStorageNodesLimit is the largest max_storage_nodes an agent may announce.
const MaxStorageNodesLimit = limits.MaxStorageNodes

// maxLogLines is the most log lines one node or upgrade status may carry.
const maxLogLines = limits.MaxLogLines

// Every field an agent sends is checked here, before anything changes: an
// out-of-range value is refused (ErrInvalid), never truncated, and every
// accepted value can be stored and shown (internal/limits has the numbers
// the agent clips to).

func validateText(field, s string) error {
	return invalid(limits.Text(field, s, limits.MaxTextLen))
}

// validateExactVersion accepts "" (not reported) or a strict semantic version.
func validateExactVersion(field, v string) error {
	if v == "" {
		return nil
	}
	return invalid(limits.Version(field, v))
}

func (r *Registration) validate() error {
	if err := ValidateID("agent", r.AgentID); err != nil {
		return err
	}
	if !platform.ValidPlatform(r.Platform) {
		return newErr(KindInvalid, "platform %.64q is not supported: use one of %s", r.Platform, strings.Join(platform.Platforms(), ", "))
	}
	if !platform.ValidArch(r.Arch) {
		return newErr(KindInvalid, "arch %.64q is not supported: use one of %s", r.Arch, strings.Join(platform.Arches(), ", "))
	}
	if err := validateText("hostname", r.Hostname); err != nil {
		return err
	}
	if err := validateExactVersion("agent version", r.AgentVersion); err != nil {
		return err
	}
	if r.MaxStorageNodes > MaxStorageNodesLimit {
		return newErr(KindInvalid, "max storage nodes %d is above %d: lower max_storage_nodes in the agent config", r.MaxStorageNodes, MaxStorageNodesLimit)
	}
	if err := invalid(limits.Labels(r.Labels)); err != nil {
		return err
	}
	return validateReport(r.Nodes, r.Upgrade)
}

// nodeChecks are the text, version, time and log checks of one reported node.
var nodeChecks = []struct {
	name  string
	check func(field string, n *NodeStatus) error
}{
	{"endpoint", func(f string, n *NodeStatus) error { return validateText(f, n.Endpoint) }},
	{"version", func(f string, n *NodeStatus) error { return validateExactVersion(f, n.Version) }},
	{"last exit", func(f string, n *NodeStatus) error { return validateText(f, n.LastExit) }},
	{"message", func(f string, n *NodeStatus) error {
		return invalid(limits.Message(f, n.Message, limits.MaxMessageLen))
	}},
	{"since", func(f string, n *NodeStatus) error { return invalid(limits.Time(f, n.Since)) }},
	{"log", func(f string, n *NodeStatus) error {
		_, err := limits.LogLines(f, n.LastLogLines)
		return invalid(err)
	}},
}

func validateReport(nodes []NodeStatus, up *UpgradeStatus) error {
	if len(nodes) > limits.MaxNodesPerAgent {
		return newErr(KindInvalid, "%d node statuses in one report: at most %d are accepted", len(nodes), limits.MaxNodesPerAgent)
	}
	seen := make(map[string]bool, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		if err := ValidateID("node", n.NodeID); err != nil {
			return err
		}
		if seen[n.NodeID] {
			return newErr(KindInvalid, "node %q is reported twice: report each node once", n.NodeID)
		}
		seen[n.NodeID] = true
		if !ValidNodeState(n.State) {
			return newErr(KindInvalid, "node %q has state %.64q: use starting, running, stopping, stopped, failed or backoff", n.NodeID, n.State)
		}
		if n.PID < 0 || n.PID > limits.MaxPID {
			return newErr(KindInvalid, "node %q has pid %d: a pid is 0 (not running) to %d", n.NodeID, n.PID, int64(limits.MaxPID))
		}
		if n.RestartCount > limits.MaxRestartCount {
			return newErr(KindInvalid, "node %q has restart count %d: at most %d is accepted", n.NodeID, n.RestartCount, limits.MaxRestartCount)
		}
		for _, c := range nodeChecks {
			// The valid path builds no field names; a failure is checked
			// again with the node's id in the name, for the message.
			if c.check(c.name, n) != nil {
				return c.check("node "+n.NodeID+" "+c.name, n)
			}
		}
	}
	if up != nil {
		if !limits.UpgradePhase(up.Phase) {
			return newErr(KindInvalid, "upgrade phase %.64q is unknown: use one of %s", up.Phase, strings.Join(limits.UpgradePhases, ", "))
		}
		if err := validVersion("upgrade from version", up.FromVersion); err != nil {
			return err
		}
		if err := validVersion("upgrade to version", up.ToVersion); err != nil {
			return err
		}
		if err := invalid(limits.Message("upgrade message", up.Message, limits.MaxMessageLen)); err != nil {
			return err
		}
		if _, err := limits.LogLines("upgrade log", up.LastLogLines); err != nil {
			return invalid(err)
		}
		if err := invalid(limits.Time("upgrade updated", up.Updated)); err != nil {
			return err
		}
	}
	return nil
}

// maxInstanceIDLen bounds an agent instance id, in bytes.
const maxInstanceIDLen = 128

// validateInstanceID accepts an empty id (agents that predate instance ids)
// or 1-128 bytes of printable ASCII without spaces.
func validateInstanceID(id string) error {
	if len(id) > maxInstanceIDLen {
		return newErr(KindInvalid, "instance id is %d bytes long: use at most %d", len(id), maxInstanceIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return newErr(KindInvalid, "instance id contains byte 0x%02x at %d: use printable ASCII without spaces (delete the agent's instance id file to get a new one)", c, i)
		}
	}
	return nil
}

// validVersion accepts "" (unset), "latest" or a strict semantic version of
// at most limits.MaxVersionLen bytes.
func validVersion(field, v string) error {
	if v == "" || v == "latest" {
		return nil
	}
	if err := limits.Version(field, v); err != nil {
		return newErr(KindInvalid, "%s (use \"latest\" or an exact version like 1.2.3)", strings.TrimPrefix(err.Error(), limits.ErrLimit.Error()+": "))
	}
	return nil
}

// Register records an agent (new, or re-registering: its desired nodes are
// kept) and returns its desired state. Nodes the agent reports that the master
// has no record of at all (its database was rebuilt, say) are adopted as
// desired rather than stopped: stopping is the operator's decision. Nodes it
// reports stopped or stopping are not adopted: they are recorded as not
// desired and forgotten once the agent applied that.
func (f *Fleet) Register(ctx context.Context, r Registration) (Desired, error) {
	if err := r.validate(); err != nil {
		return Desired{}, err
	}
	if err := validateInstanceID(r.InstanceID); err != nil {
		return Desired{}, err
	}
	var d Desired
	var fresh bool
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		f.mu.Lock()
		defer f.mu.Unlock()
		tx := txn{actor: actor.From(ctx)}
		a := f.agents[r.AgentID]
		fresh = a == nil
		replaced := ""
		if !fresh && r.InstanceID != "" && a.rec.InstanceID != "" && r.InstanceID != a.rec.InstanceID {
			if a.health != Offline {
				f.log.Warn("registration refused: agent id claimed by another instance", "agent", r.AgentID,
					"host", a.rec.Hostname, "instance", a.rec.InstanceID, "other_host", r.Hostname, "other_instance", r.InstanceID)
				return nil, newErr(KindExists, "agent id %q is already registered by host %q (instance %s), which is %s; this host %q has a different instance id (%s): set a unique agent_id in agent-config.toml",
					r.AgentID, a.rec.Hostname, a.rec.InstanceID, a.health, r.Hostname, r.InstanceID)
			}
			// The recorded instance is offline: the machine was replaced.
			replaced = fmt.Sprintf("; replaces instance %s of host %q (offline)", a.rec.InstanceID, a.rec.Hostname)
		}
		if fresh && len(f.agents) >= f.opts.MaxAgents {
			f.log.Warn("registration refused: agent limit reached", "agent", r.AgentID, "agents", f.opts.MaxAgents)
			return nil, newErr(KindExhausted, "the master already holds %d agents, its limit: remove offline agents (sutra agents rm ID) or raise --max-agents (MAX_AGENTS)", f.opts.MaxAgents)
		}
		if err := f.admitLocked(a, r.Nodes); err != nil {
			return nil, err
		}
		if fresh {
			a = &agentState{
				rec: agentRec{
					ID: r.AgentID, RegisteredAt: now, Generation: 1,
					StorageServerVersion: f.defaults.StorageServerVersion,
					DesiredAgentVersion:  f.defaults.AgentVersion,
				},
				nodes: map[string]*Node{},
			}
			f.agents[r.AgentID] = a
		}
		wasHealthy := a.health == Healthy
		a.health, a.lastSeen = Healthy, now
		rec := &a.rec
		labels := r.Labels
		if len(labels) == 0 {
			labels = nil
		}
		rec.Hostname, rec.Platform, rec.Arch, rec.AgentVersion = r.Hostname, r.Platform, r.Arch, r.AgentVersion
		rec.MaxStorageNodes, rec.Labels = r.MaxStorageNodes, maps.Clone(labels)
		if r.InstanceID != "" {
			rec.InstanceID = r.InstanceID // an agent that predates instance ids keeps the recorded one
		}

		// Adopt reported nodes the master never heard of — but not those the
		// agent reports stopped or stopping: someone stopped them, and adopting
		// them as desired would start them again.
		for _, ns := range r.Nodes {
			if _, known := f.nodes[ns.NodeID]; known || ns.State == NodeStopped || ns.State == NodeStopping {
				continue
			}
			rec.Generation++
			n := &Node{ID: ns.NodeID, AgentID: rec.ID, Desired: true, CreatedAt: now}
			f.nodes[n.ID], a.nodes[n.ID] = n, n
			tx.putNode(n)
			f.emit(&tx, now, EventNodeAdopted, rec.ID, n.ID, "reported by its agent at registration; kept as desired")
		}
		f.applyReport(&tx, a, now, r.Nodes, rec.AppliedGeneration, r.Upgrade)
		msg := fmt.Sprintf("%s %s/%s agent %s, max %d nodes", r.Hostname, r.Platform, r.Arch, r.AgentVersion, r.MaxStorageNodes)
		if !fresh {
			msg = "re-registered: " + msg + replaced
		}
		f.emit(&tx, now, EventAgentRegistered, rec.ID, "", msg)
		if !fresh && !wasHealthy {
			f.emit(&tx, now, EventAgentRecovered, rec.ID, "", "registered again")
		}
		// Registration is rare: always write the record, with the time it was
		// seen and this master as the one tracking its liveness.
		rec.LastSeen, rec.Master, rec.Health = now, f.self, Healthy
		tx.putAgent(rec)
		d = f.desiredLocked(a)
		return f.enqueue(&tx), nil
	})
	f.log.Info("agent registered", "agent", r.AgentID, "fresh", fresh, "generation", d.Generation, "nodes", len(d.Nodes))
	if err != nil {
		return Desired{}, err
	}
	return d, nil
}

// admitLocked refuses a report that would make agent a (nil: a new agent)
// hold more than limits.MaxNodesPerAgent node records (or the fleet more
// than Options.MaxNodes), counting the
// reported nodes the master has no record of. The caller holds f.mu.
func (f *Fleet) admitLocked(a *agentState, nodes []NodeStatus) error {
	held := 0
	if a != nil {
		held = len(a.nodes)
	}
	unknown := 0
	for i := range nodes {
		if f.nodes[nodes[i].NodeID] == nil {
			unknown++
		}
	}
	if unknown > 0 && held+unknown > limits.MaxNodesPerAgent {
		return newErr(KindExhausted, "the agent reports %d nodes the master has no record of and already has %d: one agent may have at most %d node records; stop nodes on the agent or remove stale ones",
			unknown, held, limits.MaxNodesPerAgent)
	}
	if unknown > 0 && len(f.nodes)+unknown > f.opts.MaxNodes {
		return newErr(KindExhausted, "the agent reports %d nodes the master has no record of, and the fleet already holds %d of at most %d node records: remove offline agents (sutra agents rm ID) or raise --max-nodes (MAX_NODES)",
			unknown, len(f.nodes), f.opts.MaxNodes)
	}
	return nil
}

// Heartbeat records an agent's report and returns its desired state. An
// unknown agent gets an ErrNotFound error: it must register again.
func (f *Fleet) Heartbeat(ctx context.Context, r Report) (Desired, error) {
	if err := ValidateID("agent", r.AgentID); err != nil {
		return Desired{}, err
	}
	if err := validateExactVersion("agent version", r.AgentVersion); err != nil {
		return Desired{}, err
	}
	if err := validateReport(r.Nodes, r.Upgrade); err != nil {
		return Desired{}, err
	}
	if _, alone := f.coord.(*cluster.Single); !alone {
		// An agent moving here from another master may be ahead of this
		// master's watch: read its record before calling it unknown.
		f.mu.RLock()
		known := f.agents[r.AgentID] != nil
		f.mu.RUnlock()
		if !known {
			f.reconcile(ctx, []keyRef{{store.TableAgents, r.AgentID}})
		}
	}
	var d Desired
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		f.mu.Lock()
		defer f.mu.Unlock()
		a := f.agents[r.AgentID]
		if a == nil {
			return nil, newErr(KindNotFound, "agent %q is not registered with this master: register again (sutra-agent does so on its own)", r.AgentID)
		}
		if err := f.admitLocked(a, r.Nodes); err != nil {
			return nil, err
		}
		tx := txn{actor: actor.From(ctx)}
		recovered := false
		if a.health != Healthy {
			msg := "heartbeat received"
			if !a.lastSeen.IsZero() {
				msg = fmt.Sprintf("heartbeat after %s of silence", now.Sub(a.lastSeen).Round(time.Second))
			}
			f.emit(&tx, now, EventAgentRecovered, a.rec.ID, "", msg)
			f.log.Info("agent recovered", "agent", a.rec.ID, "was", a.health)
			a.health = Healthy
			recovered = true
		}
		a.lastSeen = now
		rec := &a.rec
		// A change of health or of master is written (other masters show it);
		// a heartbeat that changes nothing touches memory only.
		changed := recovered || rec.Master != f.self || rec.Health != Healthy
		if changed && rec.Master != f.self {
			f.log.Info("agent attached to this master", "agent", rec.ID, "was", rec.Master)
		}
		rec.Master, rec.Health = f.self, Healthy
		// The applied generation changes only when the agent applies a new
		// desired state (rare): written then, so that every master shows it
		// (before, it waited for the next write of the record and other
		// masters showed "applied 0" for agents converged long ago).
		if r.AppliedGeneration != rec.AppliedGeneration {
			rec.AppliedGeneration = r.AppliedGeneration
			changed = true
		}
		if r.AgentVersion != "" && r.AgentVersion != rec.AgentVersion {
			rec.AgentVersion = r.AgentVersion
			changed = true
		}
		if f.applyReport(&tx, a, now, r.Nodes, r.AppliedGeneration, r.Upgrade) {
			changed = true
		}
		if changed {
			rec.LastSeen = now
			tx.putAgent(rec)
		}
		d = f.desiredLocked(a)
		return f.enqueue(&tx), nil
	})
	if err != nil {
		return Desired{}, err
	}
	return d, nil
}

// applyReport merges reported node statuses and upgrade progress into a,
// adding node and event writes to tx. It reports whether the agent record
// itself changed. The caller holds f.mu.
func (f *Fleet) applyReport(tx *txn, a *agentState, now time.Time, nodes []NodeStatus, applied uint64, up *UpgradeStatus) bool {
	changed := false
	if up != nil && !sameUpgrade(a.rec.Upgrade, up) {
		if a.rec.Upgrade == nil || a.rec.Upgrade.Phase != up.Phase || a.rec.Upgrade.ToVersion != up.ToVersion {
			msg := fmt.Sprintf("%s: %s -> %s", up.Phase, up.FromVersion, up.ToVersion)
			if up.Message != "" {
				msg += ": " + up.Message
			}
			f.emit(tx, now, EventAgentUpgrade, a.rec.ID, "", msg)
		}
		c := *up
		c.LastLogLines = slices.Clone(up.LastLogLines)
		a.rec.Upgrade = &c
		changed = true
	}
	reported := make(map[string]bool, len(nodes))
	for _, ns := range nodes {
		reported[ns.NodeID] = true
		n := f.nodes[ns.NodeID]
		if n != nil && n.AgentID != a.rec.ID {
			f.log.Warn("node reported by two agents; keeping the first", "node", ns.NodeID, "owner", n.AgentID, "reporter", a.rec.ID)
			continue
		}
		if n == nil {
			// Running but never asked for (nor adopted): record it as not
			// desired, so that operators see it while its agent stops it.
			n = &Node{ID: ns.NodeID, AgentID: a.rec.ID, CreatedAt: now, StopGeneration: a.rec.Generation}
			f.nodes[n.ID], a.nodes[n.ID] = n, n
		}
		if n.Status != nil && sameStatus(*n.Status, ns) {
			continue
		}
		f.nodeEvents(tx, now, a.rec.ID, n.Status, ns)
		c := ns
		c.LastLogLines = slices.Clone(ns.LastLogLines)
		n.Status = &c
		tx.putNode(n)
	}
	// Drop records of stopped nodes once the agent applied the stop.
	for id, n := range a.nodes {
		if n.Desired || applied < n.StopGeneration {
			continue
		}
		if reported[id] && n.Status != nil && n.Status.State != NodeStopped {
			continue
		}
		if !reported[id] && (n.Status == nil || n.Status.State != NodeStopped) {
			f.emit(tx, now, EventNodeStopped, a.rec.ID, id, "no longer reported by its agent")
		}
		delete(a.nodes, id)
		delete(f.nodes, id)
		tx.deleteNode(n)
	}
	return changed
}

func sameUpgrade(a, b *UpgradeStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Phase == b.Phase && a.FromVersion == b.FromVersion && a.ToVersion == b.ToVersion &&
		a.Message == b.Message && a.Updated.Equal(b.Updated) && slices.Equal(a.LastLogLines, b.LastLogLines)
}

func sameStatus(a, b NodeStatus) bool {
	return a.State == b.State && a.PID == b.PID && a.Endpoint == b.Endpoint && a.Version == b.Version &&
		a.RestartCount == b.RestartCount && a.LastExit == b.LastExit && a.Since.Equal(b.Since) &&
		a.Message == b.Message && slices.Equal(a.LastLogLines, b.LastLogLines)
}

// nodeEvents emits the events for a node's reported change from prev to cur.
func (f *Fleet) nodeEvents(tx *txn, now time.Time, agentID string, prev *NodeStatus, cur NodeStatus) {
	emit := func(typ, msg string) {
		f.emit(tx, now, typ, agentID, cur.NodeID, msg)
		f.log.Info("node "+strings.ToLower(strings.TrimPrefix(typ, "Node")), "agent", agentID, "node", cur.NodeID, "msg", msg)
	}
	exit := cur.LastExit
	if exit == "" {
		exit = "unknown exit"
	}
	wasRunning := prev != nil && prev.State == NodeRunning
	// Restarted: the count went up, or the node is running again after a
	// crash the previous report already showed.
	restarted := prev != nil && (cur.RestartCount > prev.RestartCount ||
		cur.State == NodeRunning && prev.State != NodeRunning && cur.RestartCount > 0)
	crashed := wasRunning && (cur.State == NodeStarting || cur.State == NodeBackoff || cur.State == NodeFailed ||
		(cur.State == NodeRunning && restarted))
	if crashed {
		emit(EventNodeCrashed, exit)
	}
	if prev != nil && prev.State == cur.State && !restarted {
		return
	}
	switch cur.State {
	case NodeRunning:
		if restarted {
			emit(EventNodeRestarted, fmt.Sprintf("running again on %s (pid %d, restart %d, last exit: %s)", cur.Endpoint, cur.PID, cur.RestartCount, exit))
		} else {
			emit(EventNodeRunning, fmt.Sprintf("running on %s (pid %d, version %s)", cur.Endpoint, cur.PID, cur.Version))
		}
	case NodeBackoff:
		if prev == nil || prev.State != NodeBackoff {
			emit(EventNodeBackoff, strings.TrimSpace(cur.Message+" (last exit: "+exit+")"))
		}
	case NodeFailed:
		if prev == nil || prev.State != NodeFailed {
			msg := cur.Message
			if msg == "" {
				msg = exit
			}
			emit(EventNodeFailed, msg)
		}
	case NodeStopped:
		if prev == nil || prev.State != NodeStopped {
			emit(EventNodeStopped, "stopped by its agent")
		}
	}
}

// Unregister removes an agent and its node records. An agent that is
// alive (healthy or degraded) is refused with ErrPrecondition unless force
// is set: a running agent registers again on its next heartbeat.
func (f *Fleet) Unregister(ctx context.Context, agentID string, force bool) error {
	if err := validateKnownID("agent", agentID); err != nil {
		return err
	}
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		f.mu.Lock()
		defer f.mu.Unlock()
		a := f.agents[agentID]
		if a == nil {
			return nil, unknownAgent(agentID)
		}
		if a.health != Offline && !force {
			return nil, newErr(KindPrecondition, "agent %q is %s (last heartbeat %s ago): stop sutra-agent on %s first, or remove it anyway with --force (a running agent registers again on its next heartbeat)",
				agentID, a.health, now.Sub(a.lastSeen).Round(time.Second), orHost(a.rec.Hostname))
		}
		tx := txn{actor: actor.From(ctx)}
		msg := fmt.Sprintf("removed by the operator (was %s): %d node records dropped", a.health, len(a.nodes))
		f.removeLocked(&tx, now, a, EventAgentUnregistered, msg)
		return f.enqueue(&tx), nil
	})
	if err == nil {
		f.log.Info("agent unregistered", "agent", agentID, "force", force)
	}
	return err
}

func orHost(h string) string {
	if h == "" {
		return "its host"
	}
	return h
}

// removeLocked drops agent a and its node records, adding the writes and
// the event to tx. The caller holds f.mu.
func (f *Fleet) removeLocked(tx *txn, now time.Time, a *agentState, event, msg string) {
	for id, n := range a.nodes {
		delete(f.nodes, id)
		tx.deleteNode(n)
	}
	delete(f.agents, a.rec.ID)
	tx.del(store.TableAgents, []byte(a.rec.ID), a.rec.rev)
	f.emit(tx, now, event, a.rec.ID, "", msg)
}

func unknownAgent(id string) error {
	return newErr(KindNotFound, "agent %q is not registered: list agents with `sutra agents`", id)
}

// SetDesiredVersion changes the storage-server and/or agent version that one
// agent (or, with an empty AgentID, every agent and every agent registering
// later) should run. It returns the agents whose desired state changed.
// A pinned agent (Agent.Pins) refuses a change of its pinned artifact
// (KindPrecondition); a change of every agent skips it.
func (f *Fleet) SetDesiredVersion(ctx context.Context, c VersionChange) ([]Agent, error) {
	out, _, err := f.SetDesiredVersionSkipped(ctx, c)
	return out, err
}

// SetDesiredVersionSkipped is SetDesiredVersion that also returns the ids
// of the agents a change of every agent skipped for a pin, sorted.
func (f *Fleet) SetDesiredVersionSkipped(ctx context.Context, c VersionChange) (changedAgents []Agent, skipped []string, err error) {
	if c.AgentID != "" {
		if err := validateKnownID("agent", c.AgentID); err != nil {
			return nil, nil, err
		}
	}
	if c.StorageServerVersion == "" && c.AgentVersion == "" {
		return nil, nil, newErr(KindInvalid, "no version given: set a storage-server version, an agent version or both (\"latest\" or like 1.2.3)")
	}
	if err := validVersion("storage-server version", c.StorageServerVersion); err != nil {
		return nil, nil, err
	}
	if err := validVersion("agent version", c.AgentVersion); err != nil {
		return nil, nil, err
	}
	var out []Agent
	// outs: the agents changed, over every try (a retry sees those
	// already written unchanged).
	outs := map[string]Agent{}
	err = f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		f.mu.Lock()
		defer f.mu.Unlock()
		var targets []*agentState
		// Each agent's change is its own write (a change of every agent
		// must fit the store's batch limit whatever the fleet's size);
		// the defaults go first.
		var ts []*ticket
		tx := txn{actor: actor.From(ctx)}
		if c.AgentID == "" {
			for _, a := range f.agents {
				targets = append(targets, a)
			}
			if c.StorageServerVersion != "" {
				f.defaults.StorageServerVersion = c.StorageServerVersion
			}
			if c.AgentVersion != "" {
				f.defaults.AgentVersion = c.AgentVersion
			}
			tx.put(store.TableMeta, metaDefaultsKey, f.defaults, f.defaultsRev)
			ts = append(ts, f.enqueue(&tx))
		} else {
			a := f.agents[c.AgentID]
			if a == nil {
				return nil, unknownAgent(c.AgentID)
			}
			if v, ok := a.rec.Pins[PinStorageServer]; ok && c.StorageServerVersion != "" {
				return nil, pinnedMessage(c.AgentID, PinStorageServer, v)
			}
			if v, ok := a.rec.Pins[PinAgent]; ok && c.AgentVersion != "" {
				return nil, pinnedMessage(c.AgentID, PinAgent, v)
			}
			targets = append(targets, a)
		}
		skipped = nil
		for _, a := range targets {
			tx := txn{actor: tx.actor}
			rec := &a.rec
			changed := false
			_, pinnedSS := rec.Pins[PinStorageServer]
			_, pinnedAgent := rec.Pins[PinAgent]
			if (pinnedSS && c.StorageServerVersion != "") || (pinnedAgent && c.AgentVersion != "") {
				skipped = append(skipped, rec.ID)
			}
			if c.StorageServerVersion != "" && !pinnedSS && rec.StorageServerVersion != c.StorageServerVersion {
				rec.StorageServerVersion = c.StorageServerVersion
				changed = true
			}
			if c.AgentVersion != "" && !pinnedAgent && rec.DesiredAgentVersion != c.AgentVersion {
				rec.DesiredAgentVersion = c.AgentVersion
				changed = true
			}
			if !changed {
				continue
			}
			rec.Generation++
			tx.putAgent(rec)
			f.emit(&tx, now, EventDesiredVersion, rec.ID, "", fmt.Sprintf("storage-server %s, agent %s", rec.StorageServerVersion, orNone(rec.DesiredAgentVersion)))
			f.emitDowngrades(&tx, now, a, c)
			outs[rec.ID] = f.agentLocked(a)
			ts = append(ts, f.enqueue(&tx))
		}
		return joinTickets(ts), nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, a := range outs {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y Agent) int { return strings.Compare(x.ID, y.ID) })
	slices.Sort(skipped)
	return out, skipped, nil
}

// DefaultVersions returns the desired versions given to agents that register.
func (f *Fleet) DefaultVersions() (storageServer, agent string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.defaults.StorageServerVersion, f.defaults.AgentVersion
}

func orNone(s string) string {
	if s == "" {
		return "unchanged"
	}
	return s
}

// Agents returns every agent, sorted by id.
func (f *Fleet) Agents() []Agent {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Agent, 0, len(f.agents))
	for _, a := range f.agents {
		out = append(out, f.agentLocked(a))
	}
	slices.SortFunc(out, func(x, y Agent) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// Agent returns one agent.
func (f *Fleet) Agent(id string) (Agent, error) {
	if err := validateKnownID("agent", id); err != nil {
		return Agent{}, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	a := f.agents[id]
	if a == nil {
		return Agent{}, unknownAgent(id)
	}
	return f.agentLocked(a), nil
}

func (f *Fleet) agentLocked(a *agentState) Agent {
	r := &a.rec
	out := Agent{
		ID: r.ID, Hostname: r.Hostname, Platform: r.Platform, Arch: r.Arch, AgentVersion: r.AgentVersion,
		MaxStorageNodes: r.MaxStorageNodes, Labels: maps.Clone(r.Labels), Health: a.health,
		RegisteredAt: r.RegisteredAt, InstanceID: r.InstanceID, LastHeartbeat: a.lastSeen, Desired: f.desiredLocked(a),
		AppliedGeneration: r.AppliedGeneration, Nodes: []NodeStatus{}, Master: r.Master,
	}
	for _, n := range a.nodes {
		if n.Status != nil {
			out.Nodes = append(out.Nodes, *n.Status)
		}
	}
	slices.SortFunc(out.Nodes, func(x, y NodeStatus) int { return strings.Compare(x.NodeID, y.NodeID) })
	if r.Upgrade != nil {
		u := *r.Upgrade
		out.Upgrade = &u
	}
	if rv := f.revoked[r.ID]; rv != nil && rv.Active {
		out.Revoked, out.RevokedAt, out.RevokedBy = true, rv.RevokedAt, rv.By
	}
	if len(r.Pins) > 0 {
		out.Pins = maps.Clone(r.Pins)
	}
	return out
}

func (f *Fleet) desiredLocked(a *agentState) Desired {
	d := Desired{
		Generation: a.rec.Generation, Nodes: []DesiredNode{},
		StorageServerVersion: a.rec.StorageServerVersion, AgentVersion: a.rec.DesiredAgentVersion,
	}
	for _, n := range a.nodes {
		if n.Desired {
			d.Nodes = append(d.Nodes, DesiredNode{NodeID: n.ID, Port: n.Port})
		}
	}
	slices.SortFunc(d.Nodes, func(x, y DesiredNode) int { return strings.Compare(x.NodeID, y.NodeID) })
	return d
}

// Cluster summarises the fleet.
func (f *Fleet) Cluster() ClusterStatus {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := ClusterStatus{TotalAgents: len(f.agents), MasterVersion: f.opts.MasterVersion}
	for _, a := range f.agents {
		switch a.health {
		case Healthy:
			c.HealthyAgents++
		case Degraded:
			c.DegradedAgents++
		default:
			c.OfflineAgents++
		}
	}
	for _, n := range f.nodes {
		if !n.Desired {
			continue
		}
		c.TotalNodes++
		if n.Status != nil {
			switch n.Status.State {
			case NodeRunning:
				c.RunningNodes++
			case NodeFailed:
				c.FailedNodes++
			}
		}
	}
	switch {
	case c.TotalAgents > 0 && c.HealthyAgents == 0:
		c.Status = ClusterCritical
	case 2*c.HealthyAgents < c.TotalAgents:
		c.Status = ClusterDegraded
	default:
		c.Status = ClusterHealthy
	}
	return c
}
