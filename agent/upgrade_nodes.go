package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/supervisor"
)

// upgradeNodes moves nodes that run another storage-server version onto
// binary, one node at a time, each by a job of its own: stop it gracefully,
// start it on the new binary with the same port and data dir, wait for
// /healthz. When the node is not healthy within the upgrade window it is
// put back on its previous binary, the version is recorded as failed (on
// disk: not retried, not even after a restart, until the master names it
// again) and the remaining nodes are left untouched. An upgrade job towards
// another binary than the current one is cancelled.
func (a *Agent) upgradeNodes(binary cache.Entry, want map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	busy := false
	for id, j := range a.upgrades {
		if !j.running() {
			delete(a.upgrades, id)
			continue
		}
		busy = true
		if j.key != binary.Checksum {
			a.log.Info("node upgrade no longer desired; cancelling it", "node", id)
			j.cancel()
		}
	}
	if busy {
		return // one node at a time
	}
	if _, failed := a.failures[binary.Checksum]; failed {
		return
	}
	for _, id := range sortedKeys(a.rec.Nodes) {
		rec := a.rec.Nodes[id]
		if _, ok := want[id]; !ok || rec.Checksum == "" || rec.Checksum == binary.Checksum {
			continue
		}
		if !a.live(id) || a.stopping[id].running() {
			continue
		}
		old := cache.Entry{Path: rec.BinaryPath, Checksum: rec.Checksum, Version: rec.Version}
		a.upgrades[id] = a.goJob(binary.Checksum, func(ctx context.Context, j *job) {
			defer a.nudge() // the next node, or a stop that waited for this job
			defer a.forgetJob(a.upgrades, id, j)
			a.upgradeNode(ctx, id, old, binary)
		})
		return
	}
}

// upgradeNode is the upgrade job of one node.
func (a *Agent) upgradeNode(ctx context.Context, id string, old, binary cache.Entry) {
	a.log.Info("upgrading node", "node", id, "from", old.Version, "to", binary.Version)
	err := a.replaceNode(ctx, id, binary)
	if err == nil {
		a.log.Info("node upgraded", "node", id, "version", binary.Version)
		a.mu.Lock()
		a.nodeNotes[id] = fmt.Sprintf("upgraded from storage-server %s to %s", old.Version, binary.Version)
		a.mu.Unlock()
		return
	}
	if ctx.Err() != nil {
		// Cancelled (the node is to stop, another version is desired, the
		// agent exits): not a verdict on the version. The next reconcile
		// starts the node again if it is still desired and not running.
		a.log.Info("node upgrade cancelled", "node", id, "to", binary.Version, "err", err)
		return
	}
	a.log.Error("node upgrade failed; putting the node back on its previous version and stopping the upgrade",
		"node", id, "from", old.Version, "to", binary.Version, "err", err)
	a.recordFailure(binary, err)
	a.mu.Lock()
	a.nodeNotes[id] = fmt.Sprintf("upgrade to storage-server %s failed and was rolled back to %s (not retried until another version is desired): %v",
		binary.Version, old.Version, err)
	// New nodes keep starting from the version that works.
	a.binary = &old
	a.mu.Unlock()
	if rerr := a.replaceNode(ctx, id, old); rerr != nil {
		a.log.Error("rollback of node failed", "node", id, "version", old.Version, "err", rerr)
	}
}

// replaceNode restarts node id on binary and waits until it is healthy.
func (a *Agent) replaceNode(ctx context.Context, id string, binary cache.Entry) error {
	stopCtx, cancel := context.WithTimeout(ctx, a.stopGrace()+5*time.Second)
	err := a.sup.Stop(stopCtx, id)
	cancel()
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	port := a.rec.Nodes[id].Port
	a.mu.Unlock()
	if err := a.startNode(id, port, binary); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	deadline := time.NewTimer(a.opts.UpgradeWindow)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n := a.sup.Node(id)
		if n == nil {
			return fmt.Errorf("node disappeared during the upgrade")
		}
		st := n.Status()
		switch {
		case st.State == supervisor.StateRunning && st.PID != 0:
			return nil
		case st.State == supervisor.StateFailed:
			return fmt.Errorf("node failed on %s: %s", binary.Version, st.LastExit)
		case st.State == supervisor.StateBackoff:
			return fmt.Errorf("node crashed on %s: %s", binary.Version, st.LastExit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("not healthy within %s on %s", a.opts.UpgradeWindow, binary.Version)
		case <-tick.C:
		}
	}
}

// ---- failed upgrades, persisted ----

// loadFailures reads the failed-upgrade record. One that cannot be read is
// moved aside (never overwritten) and the agent starts without it.
func (a *Agent) loadFailures() state.Failures {
	f, err := a.store.LoadFailures()
	if err == nil {
		return f
	}
	aside := fmt.Sprintf("%s.corrupt-%s", a.store.FailuresPath(), time.Now().UTC().Format("20060102T150405Z"))
	if rerr := os.Rename(a.store.FailuresPath(), aside); rerr != nil {
		a.log.Error("failed-upgrade record unreadable and could not be moved aside", "err", err, "move_err", rerr)
	} else {
		a.log.Error("failed-upgrade record unreadable; moved aside, starting without it", "err", err, "moved_to", aside)
	}
	return state.Failures{}
}

// recordFailure remembers, on disk, that binary failed a node upgrade here.
func (a *Agent) recordFailure(binary cache.Entry, cause error) {
	a.mu.Lock()
	want, gen := desiredVersion(a.desired)
	if a.desired == nil {
		want = binary.Version
	}
	a.failures[binary.Checksum] = state.Failure{
		Checksum: binary.Checksum, Version: binary.Version, Desired: want, Generation: gen,
		Reason: cause.Error(), At: time.Now().Unix(),
	}
	a.mu.Unlock()
	a.saveFailures()
}

// noteDesired marks the recorded failures whose version the desired state no
// longer names: naming it again later allows one new attempt.
func (a *Agent) noteDesired(d *controlplane.Desired) {
	want, _ := desiredVersion(d)
	a.mu.Lock()
	changed := false
	for k, f := range a.failures {
		if !f.Superseded && f.Desired != want {
			f.Superseded = true
			a.failures[k] = f
			changed = true
		}
	}
	a.mu.Unlock()
	if changed {
		a.saveFailures()
	}
}

// checkFailed reports whether entry failed a node upgrade here and may not
// be used. A failure is forgotten (one new attempt) when the desired state
// names the version again, after naming another, in a later generation.
func (a *Agent) checkFailed(entry cache.Entry, wantVersion string, gen uint64) (string, bool) {
	a.mu.Lock()
	f, failed := a.failures[entry.Checksum]
	retry := failed && f.Superseded && gen > f.Generation && a.desired != nil
	if retry {
		delete(a.failures, entry.Checksum)
	}
	a.mu.Unlock()
	if !failed {
		return "", false
	}
	if retry {
		a.log.Info("storage-server version that failed before is desired again; trying it once more",
			"version", entry.Version, "want", wantVersion, "generation", gen, "failed_at_generation", f.Generation)
		a.saveFailures()
		return "", false
	}
	return f.Reason, true
}

func (a *Agent) saveFailures() {
	a.failMu.Lock()
	defer a.failMu.Unlock()
	a.mu.Lock()
	cp := make(state.Failures, len(a.failures))
	for k, v := range a.failures {
		cp[k] = v
	}
	a.mu.Unlock()
	if err := a.store.SaveFailures(cp); err != nil {
		a.log.Error("save failed-upgrade record", "err", err)
	}
}
