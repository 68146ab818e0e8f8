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
	"github.com/sutragrid/sutra/agent/ratchet"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/internal/release"
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
// in progress; a job whose purpose is no longer desired is cancelled. What
// to do is decided by plan (plan.go); reconcile observes and acts.
func (a *Agent) reconcile(ctx context.Context) error {
	if err := a.self.restart(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	desired := a.desired.get()
	if desired != nil && a.opts.Upgrader != nil {
		a.selfUpdate(desired.AgentVersion)
	}
	if desired != nil {
		want, _ := desiredVersion(desired)
		a.failures.supersede(want)
	}

	act := plan(a.observe(desired))
	if act.NeedBinary {
		a.ensureBinary(desired)
	}
	for _, id := range act.CancelUpgrades {
		a.log.Info("node upgrade no longer desired; cancelling it", "node", id)
		a.nodeJobs.cancelUpgrade(id)
	}
	for _, id := range act.Stop {
		a.stopNode(id)
	}
	a.forget(act.Forget)
	for _, id := range act.Wait {
		a.pending.set(id, waitingForBinary)
	}
	binary := a.binary.current()
	for _, s := range act.Start {
		if binary == nil {
			break // planned with a binary that verification dropped since
		}
		if err := a.startNode(s.ID, s.Port, *binary); err != nil {
			a.pending.set(s.ID, err.Error())
			a.log.Error("start node", "node", s.ID, "err", err)
			continue
		}
		a.pending.set(s.ID, "")
	}
	// The upgrade was planned towards the binary plan saw; a download job
	// may have replaced it since (the next round plans anew).
	if up := act.Upgrade; up != nil && binary != nil && binary.Checksum == up.To.Checksum {
		a.upgradeNode(up.ID, up.From, *binary)
	}

	if desired != nil {
		a.desired.setApplied(desired.Generation)
	}
	a.pruneCache()
	return nil
}

// observe is what plan decides on: the desired state, the record, the
// supervised nodes, the pending nodes, the node jobs and the binary.
func (a *Agent) observe(desired *controlplane.Desired) world {
	w := world{Desired: desired, Record: a.rec.snapshot(), Live: map[string]bool{}, Pending: a.pending.snapshot()}
	for _, st := range a.sup.Status() {
		w.Supervised = append(w.Supervised, st.Name)
	}
	for _, id := range w.Supervised {
		w.Live[id] = a.sup.Live(id)
	}
	w.Upgrading, w.Stopping = a.nodeJobs.snapshot()
	if b := a.binary.current(); b != nil {
		w.Binary = b
		w.BinaryFailed = a.failures.failed(b.Checksum)
	}
	return w
}

// selfUpdate runs the agent's self-update for the desired agent version as a
// job: the download can take as long as the fetch timeout and must not hold
// up the nodes. A job for another version is cancelled.
func (a *Agent) selfUpdate(version string) {
	a.self.mu.Lock()
	defer a.self.mu.Unlock()
	if j := a.self.job; j.running() {
		if j.key != version {
			j.cancel()
		}
		return
	}
	a.self.job = a.goJob(version, func(ctx context.Context, _ *job) {
		err := a.opts.Upgrader.Desired(ctx, version)
		switch {
		case errors.Is(err, ErrRestartRequired):
			a.self.setRestart(err)
			a.nudge()
		case err != nil && ctx.Err() == nil:
			a.log.Warn("agent self-update", "err", err)
		}
	})
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
	b := &a.binary
	b.mu.Lock()
	defer b.mu.Unlock()
	upToDate := b.entry != nil && b.version == wantVersion && (wantVersion != fetch.Latest || b.gen == gen)
	if j := b.fetch; j.running() {
		if j.key == wantVersion {
			return // "latest" at a newer generation is resolved again once this job ends
		}
		a.log.Info("storage-server download no longer desired; cancelling it", "download", j.key, "want", wantVersion)
		j.cancel()
	}
	if upToDate || b.prune.running() {
		return // a prune ends at once; the next reconcile fetches
	}
	if b.waiting(wantVersion, a.clock.Now()) {
		return // failed lately: tried again once its wait is over
	}
	b.fetch = a.goJob(wantVersion, func(ctx context.Context, j *job) {
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
		start := time.Now()
		entry, err = a.fetcher.Ensure(ctx, wantVersion)
		a.metrics.Fetched(time.Since(start), entry.Size, !entry.FetchedAt.Before(start), err)
	}
	if ctx.Err() != nil {
		return // cancelled: another version is desired, or the agent stops
	}
	current := a.binary.current()
	if reason := refusalReason(err); reason != "" {
		msg := fmt.Sprintf("storage-server %s refused (%s): %v", wantVersion, reason, err)
		if current != nil {
			msg += "; nodes keep running " + current.Version
		}
		a.refused.set(msg)
	} else if err == nil {
		a.refused.set("")
	}
	if err == nil {
		a.binary.succeeded()
	}
	if err != nil {
		wait := a.binary.failed(wantVersion, a.clock.Now())
		a.log.Error("storage-server binary unavailable; will retry", "want", wantVersion, "retry_in", wait, "err", err)
		a.metrics.FetchFailed()
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
		if a.binary.useMeanwhile(j, cached) {
			a.log.Warn("cannot fetch storage-server; using the newest verified cached binary meanwhile",
				"want", wantVersion, "cached", cached.Version, "err", err)
		}
		a.nudge()
		return
	}

	f, usable, retried := a.failures.check(entry.Checksum, gen, a.desired.get() != nil)
	if retried {
		a.log.Info("storage-server version that failed before is desired again; trying it once more",
			"version", entry.Version, "want", wantVersion, "generation", gen, "failed_at_generation", f.Generation)
	}
	if !usable {
		// A version that failed a node upgrade here is used for nothing —
		// new nodes included — until the master names it again.
		fallback := current
		if fallback == nil && a.fetcher != nil {
			if cached, cerr := a.newestUsable(ctx); cerr == nil {
				fallback = &cached
			}
		}
		a.binary.publish(j, fallback, wantVersion, gen)
		a.nudge()
		running := ""
		if fallback != nil {
			running = fallback.Version
		}
		a.log.Warn("desired storage-server version failed a node upgrade on this agent; staying on the previous one (name another version, then this one again, to retry it)",
			"want", entry.Version, "sha256", entry.Checksum, "using", running, "reason", f.Reason)
		return
	}
	if !a.binary.publish(j, &entry, wantVersion, gen) {
		return
	}
	if current == nil || current.Checksum != entry.Checksum {
		a.log.Info("storage-server binary ready", "version", entry.Version, "path", entry.Path, "sha256", entry.Checksum)
	}
	a.nudge()
}

// newestUsable is the newest verified cached storage-server that never
// failed a node upgrade on this agent.
func (a *Agent) newestUsable(ctx context.Context) (cache.Entry, error) {
	e, err := a.fetcher.NewestUsable(ctx, func(e cache.Entry) bool { return !a.failures.failed(e.Checksum) })
	if err != nil {
		return cache.Entry{}, fmt.Errorf("no verified storage-server in the cache that never failed here: %w", err)
	}
	return e, nil
}

// startNode starts node id from binary, on its recorded port (or a fixed or
// free one), with its data in data_path/id.
func (a *Agent) startNode(id string, fixedPort int, binary cache.Entry) error {
	rec, ok := a.rec.get(id)
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
	a.rec.put(rec)
	a.stopped.forget(id)
	a.rec.save()
	if err := a.sup.Start(a.spec(rec, binary)); err != nil {
		return err
	}
	a.log.Info("starting node", "node", id, "port", rec.Port, "version", binary.Version, "data", rec.DataDir)
	a.commitVersion(binary)
	return nil
}

// commitVersion raises the rollback ratchet to a storage-server version a
// node runs (started, or upgraded and healthy).
func (a *Agent) commitVersion(binary cache.Entry) {
	if a.fetcher == nil || binary.Version == "" {
		return // storage.binary_path: no versions to protect
	}
	if _, err := a.ratchet.Record("storage-server", binary.Version); err != nil {
		a.log.Error("cannot record the version for rollback protection", "version", binary.Version, "err", err)
	}
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
	first, last := a.portRange()
	return pickPort(first, last, a.rec.usedPorts(), a.portFree)
}

// stopNode has node id stopped by a job.
func (a *Agent) stopNode(id string) {
	if _, ok := a.sup.NodeStatus(id); !ok {
		return
	}
	a.nodeJobs.startStop(id, func() *job {
		a.log.Info("stopping node no longer desired", "node", id)
		return a.goJob("stop", func(ctx context.Context, j *job) {
			defer a.nudge() // the node may be desired again, and the master hears of the stop
			defer a.nodeJobs.done(id, j)
			a.runStop(ctx, id)
		})
	})
}

// runStop is the stop job: it stops node id gracefully, reports it stopped
// for a while and forgets its record unless it is desired again (its data
// directory stays).
func (a *Agent) runStop(ctx context.Context, id string) {
	st, _ := a.sup.NodeStatus(id)
	stopCtx, cancel := context.WithTimeout(ctx, a.stopGrace()+5*time.Second)
	defer cancel()
	final, err := a.sup.Stop(stopCtx, id)
	if err != nil {
		a.log.Error("stop node", "node", id, "err", err)
		return
	}
	ns := a.nodeStatus(final)
	ns.PID = 0
	ns.State = supervisor.StateStopped
	if ns.LastExit == "" {
		ns.LastExit = st.LastExit
	}
	a.stopped.note(ns, a.clock.Now())
	a.pending.set(id, "")
	if a.desired.names(id) {
		a.rec.update(id, func(n *state.Node) bool {
			n.PID, n.StartTime = 0, 0
			return true
		})
	} else {
		a.rec.remove(id)
		a.notes.drop(id)
	}
	a.rec.save()
	a.log.Info("node stopped", "node", id, "exit", ns.LastExit)
}

// maxStoppedReported caps the stopped nodes reported at once (spawn/stop
// cycles faster than heartbeats must not grow the report without bound).
const maxStoppedReported = 64

// forget drops what the agent holds about nodes the master no longer wants
// and that no longer run: their records (so their ports and cached versions
// are free again; data directories stay), pending reasons and upgrade
// notes. A node stopped before it ever started is reported stopped, so the
// master does not wait for it.
func (a *Agent) forget(nodes []forgetNode) {
	changed := false
	for _, f := range nodes {
		// A job may have taken the node since plan looked.
		if a.sup.Live(f.ID) || a.nodeJobs.busy(f.ID) {
			continue
		}
		if why, ok := a.pending.take(f.ID); ok {
			now := a.clock.Now()
			a.stopped.note(controlplane.NodeStatus{NodeID: f.ID, State: supervisor.StateStopped, Since: now,
				Message: "stopped before it started (" + why + ")"}, now)
			a.log.Info("node stopped before it started", "node", f.ID, "pending", why)
		}
		if a.rec.remove(f.ID) {
			changed = true
		}
		a.notes.drop(f.ID)
	}
	if changed {
		a.rec.save()
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
	inUse := []string{}
	for _, n := range a.rec.snapshot() {
		if n.Version != "" {
			inUse = append(inUse, n.Version)
		}
	}
	b := &a.binary
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fetch.running() || b.prune.running() {
		return
	}
	if b.entry != nil {
		inUse = append(inUse, b.entry.Version)
	}
	b.prune = a.goJob("prune", func(context.Context, *job) {
		if removed, err := a.fetcher.Prune(inUse...); err != nil {
			a.log.Warn("prune cache", "err", err)
		} else if len(removed) > 0 {
			a.log.Info("pruned old storage-server versions", "removed", removed)
		}
	})
}

// report is the actual state for the next heartbeat.
func (a *Agent) report() controlplane.Report {
	rep := controlplane.Report{AppliedGeneration: a.desired.appliedGeneration()}
	seen := map[string]bool{}
	for _, st := range a.sup.Status() {
		seen[st.Name] = true
		rep.Nodes = append(rep.Nodes, a.nodeStatus(st))
	}
	pending := a.pending.snapshot()
	for _, id := range sortedKeys(pending) {
		if seen[id] {
			continue
		}
		seen[id] = true
		msg := pending[id]
		if r := a.refused.get(); r != "" {
			msg = joinMessage(msg, r)
		}
		rep.Nodes = append(rep.Nodes, controlplane.NodeStatus{NodeID: id, State: supervisor.StateBackoff, Message: msg})
	}
	rep.Nodes = append(rep.Nodes, a.stopped.report(seen, a.clock.Now())...)
	if a.opts.Upgrader != nil {
		rep.Upgrade = a.opts.Upgrader.Status()
	}
	return rep
}

// nodeStatus converts a supervisor status.
func (a *Agent) nodeStatus(st supervisor.Status) controlplane.NodeStatus {
	rec, _ := a.rec.get(st.Name)
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
	if note := a.notes.get(st.Name); note != "" {
		if ns.Message != "" {
			ns.Message += "; "
		}
		ns.Message += note
	}
	if r := a.refused.get(); r != "" {
		ns.Message = joinMessage(ns.Message, r)
	}
	return ns
}

// refusalReason names why a fetch refused a binary on purpose: a release
// signature reason (internal/release) or "rollback"; "" for other errors.
func refusalReason(err error) string {
	if r := release.ReasonOf(err); r != "" {
		return "signature " + string(r)
	}
	if errors.Is(err, ratchet.ErrRollback) {
		return "rollback"
	}
	return ""
}

func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
