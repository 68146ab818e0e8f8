package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/supervisor"
)

// upgradeNode moves node id from binary old onto binary by a job of its own
// (plan picks the node: one at a time, never to a binary that failed here):
// stop it gracefully, start it on the new binary with the same port and
// data dir, wait for /healthz. When the node is not healthy within the
// upgrade window it is put back on its previous binary, the version is
// recorded as failed (on disk: not retried, not even after a restart, until
// the master names it again) and the remaining nodes are left untouched. An
// upgrade job towards another binary than the current one is cancelled by
// a later reconcile.
func (a *Agent) upgradeNode(id string, old, binary cache.Entry) {
	a.nodeJobs.startUpgrade(id, func() *job {
		return a.goJob(binary.Checksum, func(ctx context.Context, j *job) {
			defer a.nudge() // the next node, or a stop that waited for this job
			defer a.nodeJobs.done(id, j)
			a.runUpgrade(ctx, id, old, binary)
		})
	})
}

// runUpgrade is the upgrade job of one node.
func (a *Agent) runUpgrade(ctx context.Context, id string, old, binary cache.Entry) {
	a.log.Info("upgrading node", "node", id, "from", old.Version, "to", binary.Version)
	err := a.replaceNode(ctx, id, binary)
	if err == nil {
		a.log.Info("node upgraded", "node", id, "version", binary.Version)
		a.notes.set(id, fmt.Sprintf("upgraded from storage-server %s to %s", old.Version, binary.Version))
		a.commitVersion(binary)
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
	a.notes.set(id, fmt.Sprintf("upgrade to storage-server %s failed and was rolled back to %s (not retried until another version is desired): %v",
		binary.Version, old.Version, err))
	// New nodes keep starting from the version that works.
	a.binary.fallBack(old)
	if rerr := a.replaceNode(ctx, id, old); rerr != nil {
		a.log.Error("rollback of node failed", "node", id, "version", old.Version, "err", rerr)
	}
}

// replaceNode restarts node id on binary and waits until it is healthy.
func (a *Agent) replaceNode(ctx context.Context, id string, binary cache.Entry) error {
	stopCtx, cancel := context.WithTimeout(ctx, a.stopGrace()+5*time.Second)
	_, err := a.sup.Stop(stopCtx, id)
	cancel()
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rec, _ := a.rec.get(id)
	if err := a.startNode(id, rec.Port, binary); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	deadline := time.NewTimer(a.opts.UpgradeWindow)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, ok := a.sup.NodeStatus(id)
		if !ok {
			return fmt.Errorf("node disappeared during the upgrade")
		}
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
	d := a.desired.get()
	want, gen := desiredVersion(d)
	if d == nil {
		want = binary.Version
	}
	a.failures.record(state.Failure{
		Checksum: binary.Checksum, Version: binary.Version, Desired: want, Generation: gen,
		Reason: cause.Error(), At: a.clock.Now().Unix(),
	})
}
