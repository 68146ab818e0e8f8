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
//
// It never waits for a long operation: downloads (of the agent and of
// storage-server), node upgrades and node stops run as jobs of their own,
// so a spawn or a stop is acted on at the next reconcile whatever else is
// in progress; a job whose purpose is no longer desired is cancelled.
func (a *Agent) reconcile(ctx context.Context) error {
	a.mu.Lock()
	desired := a.desired
	restart := a.restartErr
	a.mu.Unlock()
	if restart != nil {
		return restart
	}
	if ctx.Err() != nil {
		return nil
	}

	if desired != nil && a.opts.Upgrader != nil {
		a.selfUpdate(desired.AgentVersion)
	}
	if desired != nil {
		a.noteDesired(desired)
	}

	want := a.wantedNodes(desired)
	if len(want) > 0 || desired != nil {
		a.ensureBinary(desired)
	}

	// Stop what is no longer wanted.
	for _, st := range a.sup.Status() {
		if _, ok := want[st.Name]; ok {
			continue
		}
		a.stopNode(st.Name)
	}
	if desired != nil {
		a.forgetUndesired(want)
	}

	a.mu.Lock()
	binary := a.binary
	a.mu.Unlock()

	// Start what is missing.
	for _, id := range sortedKeys(want) {
		if a.live(id) || a.busy(id) {
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
		a.upgradeNodes(*binary, want)
	}

	if desired != nil {
		a.mu.Lock()
		a.applied = desired.Generation
		a.mu.Unlock()
	}
	a.pruneCache()
	return nil
}

// live reports whether node id is supervised (running, starting, in
// backoff or failed); a node whose supervision ended is not.
func (a *Agent) live(id string) bool {
	n := a.sup.Node(id)
	if n == nil {
		return false
	}
	select {
	case <-n.Done():
		return false
	default:
		return true
	}
}

// busy reports whether a job (an upgrade or a stop) owns node id now.
func (a *Agent) busy(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.upgrades[id].running() || a.stopping[id].running()
}

// selfUpdate runs the agent's self-update for the desired agent version as a
// job: the download can take as long as the fetch timeout and must not hold
// up the nodes. A job for another version is cancelled.
func (a *Agent) selfUpdate(version string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := a.selfJob; j.running() {
		if j.key != version {
			j.cancel()
		}
		return
	}
	a.selfJob = a.goJob(version, func(ctx context.Context, _ *job) {
		err := a.opts.Upgrader.Desired(ctx, version)
		switch {
		case errors.Is(err, ErrRestartRequired):
			a.mu.Lock()
			a.restartErr = err
			a.mu.Unlock()
			a.nudge()
		case err != nil && ctx.Err() == nil:
			a.log.Warn("agent self-update", "err", err)
		}
	})
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

// desiredVersion is the storage-server version d asks for ("latest" when
// none is named) and its generation.
func desiredVersion(d *controlplane.Desired) (string, uint64) {
	if d == nil || d.StorageServerVersion == "" {
		if d == nil {
			return fetch.Latest, 0
		}
		return fetch.Latest, d.Generation
	}
	return d.StorageServerVersion, d.Generation
}

// ensureBinary makes sure a job resolves the storage-server binary new nodes
// start from; the job publishes it in a.binary when done.
func (a *Agent) ensureBinary(d *controlplane.Desired) {
	wantVersion, gen := desiredVersion(d)
	a.mu.Lock()
	defer a.mu.Unlock()
	upToDate := a.binary != nil && a.binaryVersion == wantVersion && (wantVersion != fetch.Latest || a.binaryGen == gen)
	if j := a.fetchJob; j.running() {
		if j.key == wantVersion {
			return // "latest" at a newer generation is resolved again once this job ends
		}
		a.log.Info("storage-server download no longer desired; cancelling it", "download", j.key, "want", wantVersion)
		j.cancel()
	}
	if upToDate || a.pruneJob.running() {
		return // a prune ends at once; the next reconcile fetches
	}
	a.fetchJob = a.goJob(wantVersion, func(ctx context.Context, j *job) {
		a.fetchBinary(ctx, j, wantVersion, gen)
	})
}

// fetchBinary is the download job of ensureBinary.
func (a *Agent) fetchBinary(ctx context.Context, j *job, wantVersion string, gen uint64) {
	var entry cache.Entry
	var err error
	if a.fetcher == nil {
		entry, err = fetch.Local(ctx, a.cfg.Storage.BinaryPath)
	} else {
		entry, err = a.fetcher.Ensure(ctx, wantVersion)
	}
	if ctx.Err() != nil {
		return // cancelled: another version is desired, or the agent stops
	}
	a.mu.Lock()
	current := a.binary
	a.mu.Unlock()
	if err != nil {
		a.log.Error("storage-server binary unavailable; will retry", "want", wantVersion, "err", err)
		if current != nil || a.fetcher == nil {
			return
		}
		// Master unreachable (or the version unpublished): the newest
		// verified cached binary that never failed here keeps the grid
		// running meanwhile.
		cached, cerr := a.newestUsable(ctx)
		if cerr != nil {
			return
		}
		a.mu.Lock()
		if a.fetchJob == j && a.binary == nil {
			a.log.Warn("cannot fetch storage-server; using the newest verified cached binary meanwhile",
				"want", wantVersion, "cached", cached.Version, "err", err)
			a.binary = &cached
		}
		a.mu.Unlock()
		a.nudge()
		return
	}

	if why, failed := a.checkFailed(entry, wantVersion, gen); failed {
		// A version that failed a node upgrade here is used for nothing —
		// new nodes included — until the master names it again.
		fallback := current
		if fallback == nil && a.fetcher != nil {
			if cached, cerr := a.newestUsable(ctx); cerr == nil {
				fallback = &cached
			}
		}
		a.mu.Lock()
		if a.fetchJob == j {
			a.binary, a.binaryVersion, a.binaryGen = fallback, wantVersion, gen
		}
		a.mu.Unlock()
		a.nudge()
		running := ""
		if fallback != nil {
			running = fallback.Version
		}
		a.log.Warn("desired storage-server version failed a node upgrade on this agent; staying on the previous one (name another version, then this one again, to retry it)",
			"want", entry.Version, "sha256", entry.Checksum, "using", running, "reason", why)
		return
	}
	a.mu.Lock()
	if a.fetchJob != j {
		a.mu.Unlock()
		return
	}
	if current == nil || current.Checksum != entry.Checksum {
		a.log.Info("storage-server binary ready", "version", entry.Version, "path", entry.Path, "sha256", entry.Checksum)
	}
	a.binary, a.binaryVersion, a.binaryGen = &entry, wantVersion, gen
	a.mu.Unlock()
	a.nudge()
}

// newestUsable is the newest verified cached storage-server that never
// failed a node upgrade on this agent.
func (a *Agent) newestUsable(ctx context.Context) (cache.Entry, error) {
	c := a.fetcher.Cache()
	versions, err := c.Versions()
	if err != nil {
		return cache.Entry{}, err
	}
	for _, v := range versions {
		e, err := c.Verified(ctx, v)
		if err != nil {
			if ctx.Err() != nil {
				return cache.Entry{}, ctx.Err()
			}
			continue
		}
		a.mu.Lock()
		_, failed := a.failures[e.Checksum]
		a.mu.Unlock()
		if !failed {
			return e, nil
		}
	}
	return cache.Entry{}, fmt.Errorf("no verified storage-server in the cache that never failed here: %w", cache.ErrNotCached)
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

// portScan is how many ports from storage.port_range_start the agent tries
// for new nodes (cut at 65535).
const portScan = 1000

// portRange is the ports new nodes get: port_range_start up to 999 more,
// never beyond 65535.
func (a *Agent) portRange() (first, last int) {
	first = a.cfg.Storage.PortRangeStart
	return first, min(first+portScan-1, 65535)
}

// freePort picks the first port of the range that no recorded node uses and
// that can be bound now.
func (a *Agent) freePort() (int, error) {
	a.mu.Lock()
	used := map[int]bool{}
	for _, p := range a.rec.UsedPorts() {
		used[p] = true
	}
	a.mu.Unlock()
	first, last := a.portRange()
	for port := first; port <= last; port++ {
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
	return 0, fmt.Errorf("no free port in %d-%d (%d recorded nodes hold ports): stop nodes, free ports or move storage.port_range_start", first, last, len(used))
}

// stopNode has node id stopped by a job; a node being upgraded has its
// upgrade cancelled first (the next reconcile stops it).
func (a *Agent) stopNode(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if j := a.upgrades[id]; j.running() {
		a.log.Info("node no longer desired; cancelling its upgrade", "node", id)
		j.cancel()
		return
	}
	if a.stopping[id].running() {
		return
	}
	n := a.sup.Node(id)
	if n == nil {
		return
	}
	a.log.Info("stopping node no longer desired", "node", id)
	a.stopping[id] = a.goJob("stop", func(ctx context.Context, j *job) {
		defer a.nudge() // the node may be desired again, and the master hears of the stop
		defer a.forgetJob(a.stopping, id, j)
		a.runStop(ctx, id, n)
	})
}

// runStop is the stop job: it stops node n gracefully, reports it stopped
// for a while and forgets its record unless it is desired again (its data
// directory stays).
func (a *Agent) runStop(ctx context.Context, id string, n *supervisor.Node) {
	st := n.Status()
	stopCtx, cancel := context.WithTimeout(ctx, a.stopGrace()+5*time.Second)
	defer cancel()
	if err := a.sup.Stop(stopCtx, id); err != nil {
		a.log.Error("stop node", "node", id, "err", err)
		return
	}
	final := n.Status()
	a.mu.Lock()
	ns := a.nodeStatus(final)
	ns.PID = 0
	ns.State = supervisor.StateStopped
	if ns.LastExit == "" {
		ns.LastExit = st.LastExit
	}
	a.noteStoppedLocked(ns)
	delete(a.pending, id)
	if a.desiredLocked(id) {
		if rec, ok := a.rec.Nodes[id]; ok {
			rec.PID, rec.StartTime = 0, 0
			a.rec.Nodes[id] = rec
		}
	} else {
		delete(a.rec.Nodes, id)
		delete(a.nodeNotes, id)
	}
	a.mu.Unlock()
	a.saveRecord()
	a.log.Info("node stopped", "node", id, "exit", ns.LastExit)
}

// forgetJob removes job j of node id from m once it ends, so that the job
// maps hold running jobs only.
func (a *Agent) forgetJob(m map[string]*job, id string, j *job) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if m[id] == j {
		delete(m, id)
	}
}

// maxStoppedReported caps the stopped nodes reported at once (spawn/stop
// cycles faster than heartbeats must not grow the report without bound).
const maxStoppedReported = 64

// noteStoppedLocked reports node ns.NodeID stopped until a heartbeat carried
// it (or stoppedReportFor passed), dropping the oldest such report beyond
// maxStoppedReported; a.mu must be held.
func (a *Agent) noteStoppedLocked(ns controlplane.NodeStatus) {
	for len(a.stopped) >= maxStoppedReported {
		oldest := ""
		for id, s := range a.stopped {
			if oldest == "" || s.until.Before(a.stopped[oldest].until) {
				oldest = id
			}
		}
		delete(a.stopped, oldest)
	}
	a.stopped[ns.NodeID] = stoppedNode{status: ns, until: time.Now().Add(stoppedReportFor)}
}

// desiredLocked reports whether the master's desired state names node id;
// a.mu must be held.
func (a *Agent) desiredLocked(id string) bool {
	if a.desired == nil {
		return true // the master has not answered: keep what is recorded
	}
	for _, n := range a.desired.Nodes {
		if n.NodeID == id {
			return true
		}
	}
	return false
}

// forgetUndesired drops what the agent holds about nodes the master no
// longer wants and that no longer run: their records (so their ports and
// cached versions are free again; data directories stay), pending reasons
// and upgrade notes. A node stopped before it ever started is reported
// stopped, so the master does not wait for it.
func (a *Agent) forgetUndesired(want map[string]int) {
	a.mu.Lock()
	var candidates []string
	for id := range a.rec.Nodes {
		if _, ok := want[id]; !ok {
			candidates = append(candidates, id)
		}
	}
	for id := range a.pending {
		if _, ok := want[id]; !ok {
			candidates = append(candidates, id)
		}
	}
	a.mu.Unlock()
	if len(candidates) == 0 {
		return
	}
	changed := false
	for _, id := range candidates {
		if a.live(id) || a.busy(id) {
			continue
		}
		a.mu.Lock()
		if why, ok := a.pending[id]; ok {
			delete(a.pending, id)
			a.noteStoppedLocked(controlplane.NodeStatus{NodeID: id, State: supervisor.StateStopped, Since: time.Now(),
				Message: "stopped before it started (" + why + ")"})
			a.log.Info("node stopped before it started", "node", id, "pending", why)
		}
		if _, ok := a.rec.Nodes[id]; ok {
			delete(a.rec.Nodes, id)
			changed = true
		}
		delete(a.nodeNotes, id)
		a.mu.Unlock()
	}
	if changed {
		a.saveRecord()
	}
}

func (a *Agent) stopGrace() time.Duration {
	if a.opts.StopGrace > 0 {
		return a.opts.StopGrace
	}
	return supervisor.DefaultStopGrace
}

// pruneCache removes cached storage-server versions beyond the newest few
// that no recorded node runs and that new nodes do not start from. It runs
// as a job, never while a download job runs (both use the cache).
func (a *Agent) pruneCache() {
	if a.fetcher == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fetchJob.running() || a.pruneJob.running() {
		return
	}
	inUse := []string{}
	for _, n := range a.rec.Nodes {
		if n.Version != "" {
			inUse = append(inUse, n.Version)
		}
	}
	if a.binary != nil {
		inUse = append(inUse, a.binary.Version)
	}
	a.pruneJob = a.goJob("prune", func(context.Context, *job) {
		if removed, err := a.fetcher.Prune(inUse...); err != nil {
			a.log.Warn("prune cache", "err", err)
		} else if len(removed) > 0 {
			a.log.Info("pruned old storage-server versions", "removed", removed)
		}
	})
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
		rep.Nodes = append(rep.Nodes, controlplane.NodeStatus{NodeID: id, State: supervisor.StateBackoff, Message: a.pending[id]})
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
			s.sent = true
			a.stopped[id] = s
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
		State:        st.State,
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
