package agent

import (
	"fmt"
	"slices"
	"sort"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/state"
)

// The reconcile loop's decisions, as pure functions: what the agent sees
// (the desired state, its node record, its supervised nodes, its jobs) goes
// in, the actions to take come out. No goroutines, locks, clocks or I/O
// here; reconcile.go observes the world, calls plan and carries the actions
// out, and plan_test.go walks the decisions table by table.

// world is what one reconcile round sees.
type world struct {
	// Desired is the master's desired state; nil until the master answered
	// since this agent started.
	Desired *controlplane.Desired
	// Record is the node record (node id -> what the agent started).
	Record map[string]state.Node
	// Supervised is every node the supervisor holds, by name.
	Supervised []string
	// Live is the supervised nodes whose supervision has not ended.
	Live map[string]bool
	// Pending is the desired nodes not running yet, with the reason.
	Pending map[string]string
	// Upgrading is the running node-upgrade jobs: node -> target checksum.
	Upgrading map[string]string
	// Stopping is the nodes a stop job owns now.
	Stopping map[string]bool
	// Binary is what new nodes start from (nil: none resolved yet), and
	// BinaryFailed whether it failed a node upgrade here.
	Binary       *cache.Entry
	BinaryFailed bool
}

// actions is what one reconcile round does, in this order.
type actions struct {
	// Want is the desired node set: node id -> fixed port (0: any).
	Want map[string]int
	// NeedBinary: a download job must resolve the binary new nodes start from.
	NeedBinary bool
	// CancelUpgrades are upgrade jobs to cancel: of a node to stop, or
	// towards another binary than the current one.
	CancelUpgrades []string
	// Stop are the nodes to stop (by a job each).
	Stop []string
	// Forget are the undesired nodes that no longer run: their record,
	// pending reason and upgrade note go.
	Forget []forgetNode
	// Wait are the desired nodes that wait for a binary (reported pending).
	Wait []string
	// Start are the desired nodes to start from Binary.
	Start []startNode
	// Upgrade is the one node to move onto Binary now (nil: none).
	Upgrade *upgradeStep
}

// forgetNode drops what the agent holds about a node no longer desired.
type forgetNode struct {
	ID string
	// Pending is why the node never started ("" = it did); such a node is
	// reported stopped so that the master does not wait for it.
	Pending string
}

// startNode starts a desired node, on Port when it is fixed (>0).
type startNode struct {
	ID   string
	Port int
}

// upgradeStep moves node ID from binary From onto binary To.
type upgradeStep struct {
	ID       string
	From, To cache.Entry
}

// waitingForBinary is the pending reason of a node that waits for its binary.
const waitingForBinary = "waiting for a verified storage-server binary"

// wantedNodes is the desired node set (id -> fixed port or 0); before the
// master has answered, it is the set of nodes the record says were running
// and the nodes the supervisor holds.
func wantedNodes(d *controlplane.Desired, rec map[string]state.Node, supervised []string) map[string]int {
	want := map[string]int{}
	if d != nil {
		for _, n := range d.Nodes {
			want[n.NodeID] = n.Port
		}
		return want
	}
	for id, n := range rec {
		if n.PID != 0 {
			want[id] = n.Port
		}
	}
	for _, id := range supervised {
		want[id] = 0
	}
	return want
}

// plan decides one reconcile round. A node a job owns (an upgrade or a
// stop) is left to that job; at most one node upgrades at a time, never to
// a binary that failed an upgrade here.
func plan(w world) actions {
	want := wantedNodes(w.Desired, w.Record, w.Supervised)
	act := actions{Want: want, NeedBinary: len(want) > 0 || w.Desired != nil}
	busy := func(id string) bool { _, up := w.Upgrading[id]; return up || w.Stopping[id] }

	// Stop what is no longer wanted; a node being upgraded has its upgrade
	// cancelled first (a later round stops it).
	stopping := map[string]bool{}
	for _, id := range sortedUnique(w.Supervised) {
		if _, ok := want[id]; ok {
			continue
		}
		switch _, up := w.Upgrading[id]; {
		case up:
			act.CancelUpgrades = append(act.CancelUpgrades, id)
		case w.Stopping[id]:
		default:
			act.Stop = append(act.Stop, id)
			stopping[id] = true
		}
	}

	// Forget the undesired nodes that no longer run (only once the master
	// said what it wants: before, the record is all the agent knows).
	if w.Desired != nil {
		candidates := map[string]string{}
		for id := range w.Record {
			candidates[id] = ""
		}
		for id, why := range w.Pending {
			candidates[id] = why
		}
		for _, id := range sortedKeys(candidates) {
			if _, ok := want[id]; ok || w.Live[id] || busy(id) || stopping[id] {
				continue
			}
			act.Forget = append(act.Forget, forgetNode{ID: id, Pending: candidates[id]})
		}
	}

	// Start what is missing.
	for _, id := range sortedKeys(want) {
		if w.Live[id] || busy(id) {
			continue
		}
		if w.Binary == nil {
			act.Wait = append(act.Wait, id)
			continue
		}
		act.Start = append(act.Start, startNode{ID: id, Port: want[id]})
	}

	if w.Binary != nil {
		act.Upgrade = planUpgrade(w, want, &act)
	}
	return act
}

// planUpgrade picks the next node to move onto w.Binary: none while an
// upgrade towards it runs (upgrades towards another binary are cancelled),
// none when it failed here, else the first desired, live node (by id) that
// runs another recorded binary or version and is not being stopped.
func planUpgrade(w world, want map[string]int, act *actions) *upgradeStep {
	running := false
	for _, id := range sortedKeys(w.Upgrading) {
		running = true
		if w.Upgrading[id] != w.Binary.Checksum && !slices.Contains(act.CancelUpgrades, id) {
			act.CancelUpgrades = append(act.CancelUpgrades, id)
		}
	}
	if running || w.BinaryFailed {
		return nil
	}
	for _, id := range sortedKeys(w.Record) {
		rec := w.Record[id]
		// Same bytes under another version (a re-tagged release) still
		// moves the node: it then runs, and reports, the version desired,
		// which is what a rollout waits for.
		same := rec.Checksum == w.Binary.Checksum && (rec.Version == w.Binary.Version || rec.Version == "")
		if _, ok := want[id]; !ok || rec.Checksum == "" || same {
			continue
		}
		if !w.Live[id] || w.Stopping[id] {
			continue
		}
		return &upgradeStep{ID: id, From: cache.Entry{Path: rec.BinaryPath, Checksum: rec.Checksum, Version: rec.Version}, To: *w.Binary}
	}
	return nil
}

// pickPort is the first port of first..last that no recorded node uses and
// that free says can be bound now.
func pickPort(first, last int, used map[int]bool, free func(port int) bool) (int, error) {
	last = min(last, 65535)
	for port := max(first, 1); port <= last; port++ {
		if !used[port] && free(port) {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port in %d-%d (%d recorded nodes hold ports): stop nodes, free ports or move storage.port_range_start", first, last, len(used))
}

// failureVerdict decides whether a binary may be used given its recorded
// failure (failed: one is recorded) at desired generation gen. A failure is
// forgotten — one new attempt — only when the desired state named another
// version since (Superseded) and names this one again in a later generation.
func failureVerdict(f state.Failure, failed bool, gen uint64, masterAnswered bool) (usable, forget bool) {
	if !failed {
		return true, false
	}
	if f.Superseded && gen > f.Generation && masterAnswered {
		return true, true
	}
	return false, false
}

// supersede marks the failures whose desired version is not want: the
// desired state moved on, so naming the version again later allows one new
// attempt. It reports whether any failure changed.
func supersede(failures state.Failures, want string) bool {
	changed := false
	for k, f := range failures {
		if !f.Superseded && f.Desired != want {
			f.Superseded = true
			failures[k] = f
			changed = true
		}
	}
	return changed
}

func sortedUnique(ids []string) []string {
	out := append([]string(nil), ids...)
	sort.Strings(out)
	j := 0
	for i, id := range out {
		if i == 0 || id != out[j-1] {
			out[j] = id
			j++
		}
	}
	return out[:j]
}
