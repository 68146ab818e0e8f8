package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/supervisor"
)

// stoppedReportFor is how long a stopped node is still reported, so that the
// master sees it stopped before it disappears from heartbeats.
const stoppedReportFor = 2 * time.Minute

// reconcile makes the running nodes equal to the desired ones. Without any
// desired state yet (master never reached since start), it keeps the nodes
// of its record running. It returns an error only when the agent must exit.
func (a *Agent) reconcile(ctx context.Context) error {
	a.mu.Lock()
	desired := a.desired
	a.mu.Unlock()

	if desired != nil && a.opts.Upgrader != nil {
		if err := a.opts.Upgrader.Desired(ctx, desired.AgentVersion); err != nil {
			if errors.Is(err, ErrRestartRequired) {
				return err
			}
			a.log.Warn("agent self-update", "err", err)
		}
	}

	want := a.wantedNodes(desired)
	if len(want) > 0 || desired != nil {
		a.ensureBinary(ctx, desired)
	}

	// Stop what is no longer wanted.
	for _, st := range a.sup.Status() {
		if _, ok := want[st.Name]; ok {
			continue
		}
		a.stopNode(ctx, st.Name)
	}

	a.mu.Lock()
	binary := a.binary
	a.mu.Unlock()

	// Start what is missing; reset what failed and is still wanted after a new generation.
	for _, id := range sortedKeys(want) {
		if n := a.sup.Node(id); n != nil {
			continue
		}
		if binary == nil {
			a.setPending(id, "waiting for a verified storage-server binary")
			continue
		}
		if err := a.startNode(id, want[id], *binary); err != nil {
			a.setPending(id, err.Error())
			a.log.Error("start node", "node", id, "err", err)
			continue
		}
		a.setPending(id, "")
	}

	if binary != nil {
		a.upgradeNodes(ctx, *binary)
	}

	if desired != nil {
		a.mu.Lock()
		a.applied = desired.Generation
		a.mu.Unlock()
	}
	a.pruneCache()
	return nil
}

// wantedNodes is the desired node set (id -> fixed port or 0); before the
// master has answered, it is the set of nodes the record says were running.
func (a *Agent) wantedNodes(d *controlplane.Desired) map[string]int {
	want := map[string]int{}
	if d != nil {
		for _, n := range d.Nodes {
			want[n.NodeID] = n.Port
		}
		return want
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, n := range a.rec.Nodes {
		if n.PID != 0 {
			want[id] = n.Port
		}
	}
	for _, st := range a.sup.Status() {
		want[st.Name] = 0
	}
	return want
}

// ensureBinary resolves the storage-server binary new nodes start from.
func (a *Agent) ensureBinary(ctx context.Context, d *controlplane.Desired) {
	wantVersion := fetch.Latest
	var gen uint64
	if d != nil {
		wantVersion, gen = d.StorageServerVersion, d.Generation
	}
	a.mu.Lock()
	current := a.binary
	upToDate := current != nil && a.binaryVersion == wantVersion && (wantVersion != fetch.Latest || a.binaryGen == gen)
	a.mu.Unlock()
	if upToDate {
		return
	}

	var entry cache.Entry
	var err error
	if a.fetcher == nil {
		entry, err = fetch.Local(ctx, a.cfg.Storage.BinaryPath)
	} else {
		entry, err = a.fetcher.Ensure(ctx, wantVersion)
		if err != nil && current == nil {
			// Master unreachable (or the version unpublished): the newest
			// verified cached binary keeps the grid running meanwhile.
			if cached, cerr := a.fetcher.NewestVerified(ctx); cerr == nil {
				a.log.Warn("cannot fetch storage-server; using the newest verified cached binary meanwhile",
					"want", wantVersion, "cached", cached.Version, "err", err)
				a.mu.Lock()
				a.binary = &cached
				a.mu.Unlock()
				return
			}
		}
	}
	if err != nil {
		a.log.Error("storage-server binary unavailable; will retry", "want", wantVersion, "err", err)
		return
	}
	a.mu.Lock()
	if why, failed := a.failedUpgrade[entry.Checksum]; failed && current != nil {
		// A version that failed a node upgrade is not used for new nodes either.
		a.binaryVersion, a.binaryGen = wantVersion, gen
		a.mu.Unlock()
		a.log.Warn("desired storage-server version failed a node upgrade on this agent; staying on the previous one",
			"want", entry.Version, "running", current.Version, "reason", why)
		return
	}
	if current == nil || current.Checksum != entry.Checksum {
		a.log.Info("storage-server binary ready", "version", entry.Version, "path", entry.Path, "sha256", entry.Checksum)
	}
	a.binary, a.binaryVersion, a.binaryGen = &entry, wantVersion, gen
	a.mu.Unlock()
}

func (a *Agent) setPending(id, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if why == "" {
		delete(a.pending, id)
		return
	}
	a.pending[id] = why
}

// startNode starts node id from binary, on its recorded port (or a fixed or
// free one), with its data in data_path/id.
func (a *Agent) startNode(id string, fixedPort int, binary cache.Entry) error {
	a.mu.Lock()
	rec, ok := a.rec.Nodes[id]
	a.mu.Unlock()
	if !ok {
		rec = state.Node{NodeID: id, DataDir: filepath.Join(a.cfg.Storage.DataPath, id)}
	}
	if fixedPort > 0 {
		rec.Port = fixedPort
	}
	if rec.Port == 0 {
		port, err := a.freePort()
		if err != nil {
			return err
		}
		rec.Port = port
	}
	if err := os.MkdirAll(rec.DataDir, 0o750); err != nil {
		return fmt.Errorf("node %s data dir: %w", id, err)
	}
	rec.BinaryPath, rec.Checksum, rec.Version = binary.Path, binary.Checksum, binary.Version
	rec.PID, rec.StartTime = 0, 0
	a.mu.Lock()
	a.rec.Nodes[id] = rec
	delete(a.stopped, id)
	a.mu.Unlock()
	a.saveRecord()
	if _, err := a.sup.Start(a.spec(rec, binary)); err != nil {
		return err
	}
	a.log.Info("starting node", "node", id, "port", rec.Port, "version", binary.Version, "data", rec.DataDir)
	return nil
}

// freePort picks the first port from port_range_start that no recorded node
// uses and that can be bound now.
func (a *Agent) freePort() (int, error) {
	a.mu.Lock()
	used := map[int]bool{}
	for _, p := range a.rec.UsedPorts() {
		used[p] = true
	}
	a.mu.Unlock()
	start := a.cfg.Storage.PortRangeStart
	for port := start; port < start+1000 && port <= 65535; port++ {
		if used[port] {
			continue
		}
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d: raise storage.port_range_start or free ports", start, start+999)
}

func (a *Agent) stopNode(ctx context.Context, id string) {
	n := a.sup.Node(id)
	if n == nil {
		return
	}
	a.log.Info("stopping node no longer desired", "node", id)
	st := n.Status()
	stopCtx, cancel := context.WithTimeout(ctx, a.stopGrace()+5*time.Second)
	defer cancel()
	if err := a.sup.Stop(stopCtx, id); err != nil {
		a.log.Error("stop node", "node", id, "err", err)
		return
	}
	final := n.Status()
	a.mu.Lock()
	if rec, ok := a.rec.Nodes[id]; ok {
		rec.PID, rec.StartTime = 0, 0
		a.rec.Nodes[id] = rec
	}
	ns := a.nodeStatus(final)
	ns.PID = 0
	ns.State = controlplane.NodeStopped
	if ns.LastExit == "" {
		ns.LastExit = st.LastExit
	}
	a.stopped[id] = stoppedNode{status: ns, until: time.Now().Add(stoppedReportFor)}
	delete(a.pending, id)
	a.mu.Unlock()
	a.saveRecord()
}

func (a *Agent) stopGrace() time.Duration {
	if a.opts.StopGrace > 0 {
		return a.opts.StopGrace
	}
	return supervisor.DefaultStopGrace
}

// pruneCache keeps the last versions and every version a node runs.
func (a *Agent) pruneCache() {
	if a.fetcher == nil {
		return
	}
	a.mu.Lock()
	inUse := []string{}
	for _, n := range a.rec.Nodes {
		if n.Version != "" {
			inUse = append(inUse, n.Version)
		}
	}
	if a.binary != nil {
		inUse = append(inUse, a.binary.Version)
	}
	a.mu.Unlock()
	if removed, err := a.fetcher.Prune(inUse...); err != nil {
		a.log.Warn("prune cache", "err", err)
	} else if len(removed) > 0 {
		a.log.Info("pruned old storage-server versions", "removed", removed)
	}
}

// report is the actual state for the next heartbeat.
func (a *Agent) report() controlplane.Report {
	statuses := a.sup.Status()
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := controlplane.Report{AppliedGeneration: a.applied}
	seen := map[string]bool{}
	for _, st := range statuses {
		seen[st.Name] = true
		rep.Nodes = append(rep.Nodes, a.nodeStatus(st))
	}
	for _, id := range sortedKeys(a.pending) {
		if seen[id] {
			continue
		}
		seen[id] = true
		rep.Nodes = append(rep.Nodes, controlplane.NodeStatus{NodeID: id, State: controlplane.NodeBackoff, Message: a.pending[id]})
	}
	now := time.Now()
	for _, id := range sortedKeys(a.stopped) {
		s := a.stopped[id]
		if now.After(s.until) {
			delete(a.stopped, id)
			continue
		}
		if !seen[id] {
			rep.Nodes = append(rep.Nodes, s.status)
		}
	}
	if a.opts.Upgrader != nil {
		rep.Upgrade = a.opts.Upgrader.Status()
	}
	return rep
}

// nodeStatus converts a supervisor status; a.mu must be held.
func (a *Agent) nodeStatus(st supervisor.Status) controlplane.NodeStatus {
	rec := a.rec.Nodes[st.Name]
	ns := controlplane.NodeStatus{
		NodeID:       st.Name,
		State:        controlplane.NodeState(st.State),
		PID:          st.PID,
		Version:      rec.Version,
		RestartCount: st.Restarts,
		LastExit:     st.LastExit,
		Since:        st.Since,
		Message:      st.Message,
	}
	if rec.Port > 0 {
		ns.Endpoint = net.JoinHostPort(a.advertise, strconv.Itoa(rec.Port))
	}
	if st.State == supervisor.StateBackoff || st.State == supervisor.StateFailed || st.LastExit != "" {
		ns.LastLogLines = st.LastLog
	}
	if note := a.nodeNotes[st.Name]; note != "" {
		if ns.Message != "" {
			ns.Message += "; "
		}
		ns.Message += note
	}
	return ns
}
