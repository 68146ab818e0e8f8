package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/supervisor"
)

// upgradeNodes moves nodes that run another storage-server version onto
// binary, one node at a time: stop it gracefully, start it on the new binary
// with the same port and data dir, wait for /healthz. When the node is not
// healthy within the upgrade window it is put back on its previous binary,
// the version is marked failed (not retried automatically) and the remaining
// nodes are left untouched.
func (a *Agent) upgradeNodes(ctx context.Context, binary cache.Entry) {
	a.mu.Lock()
	if _, failed := a.failedUpgrade[binary.Checksum]; failed {
		a.mu.Unlock()
		return
	}
	type target struct {
		id  string
		old cache.Entry
	}
	var todo []target
	for _, id := range sortedKeys(a.rec.Nodes) {
		rec := a.rec.Nodes[id]
		if a.sup.Node(id) == nil || rec.Checksum == "" || rec.Checksum == binary.Checksum {
			continue
		}
		todo = append(todo, target{id: id, old: cache.Entry{Path: rec.BinaryPath, Checksum: rec.Checksum, Version: rec.Version}})
	}
	a.mu.Unlock()

	for _, t := range todo {
		if ctx.Err() != nil {
			return
		}
		a.log.Info("upgrading node", "node", t.id, "from", t.old.Version, "to", binary.Version)
		if err := a.replaceNode(ctx, t.id, binary); err != nil {
			a.log.Error("node upgrade failed; putting the node back on its previous version and stopping the upgrade",
				"node", t.id, "from", t.old.Version, "to", binary.Version, "err", err)
			a.mu.Lock()
			a.failedUpgrade[binary.Checksum] = err.Error()
			a.nodeNotes[t.id] = fmt.Sprintf("upgrade to storage-server %s failed and was rolled back to %s (not retried until another version is desired): %v",
				binary.Version, t.old.Version, err)
			// New nodes keep starting from the version that works.
			a.binary = &t.old
			a.mu.Unlock()
			if rerr := a.replaceNode(ctx, t.id, t.old); rerr != nil {
				a.log.Error("rollback of node failed", "node", t.id, "version", t.old.Version, "err", rerr)
			}
			return
		}
		a.log.Info("node upgraded", "node", t.id, "version", binary.Version)
		a.mu.Lock()
		a.nodeNotes[t.id] = fmt.Sprintf("upgraded from storage-server %s to %s", t.old.Version, binary.Version)
		a.mu.Unlock()
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
