package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/supervisor"
)

// Re-adoption and recovery of the node record.
//
// Every node the agent spawns carries environment markers: the agent data
// directory it belongs to and its node id, port, data directory, version
// and binary checksum. A restarted agent re-adopts the nodes of its record
// on a full identity match only (pid, start time, boot id and executable;
// supervisor.AdoptIdentity), so a pid reused after a reboot is never taken
// for a node. Then, where the platform lets it read other processes'
// environments (Linux), it looks for processes of its own user that carry
// its data-dir marker and that it did not adopt — a record that was
// corrupt (moved aside, never overwritten), missing, or written before the
// node started — and adopts them too, so that a running node is never
// started twice (a second copy would crash-loop on the first one's
// database lock). A process is adopted only when its executable is the
// configured storage.binary_path or lies in the agent's cache.

// Environment markers given to every node the agent starts.
const (
	envAgentData = "SUTRA_AGENT_DATA"
	envNodeID    = "SUTRA_NODE_ID"
	envVersion   = "SUTRA_NODE_VERSION"
	envChecksum  = "SUTRA_NODE_SHA256"
)

// recovery is the agent's state for re-adoption.
type recovery struct {
	bootID    string // this boot (supervisor.BootID); "" where there is none
	markerDir string // the agent data dir as the markers name it (absolute)
	movedTo   string // where an unreadable record was moved aside ("" = it was fine)
}

// loadRecord reads the node record into a.rec. A corrupt record is moved
// aside (kept for the operator) and the agent starts from an empty one,
// which adopt then rebuilds from the running nodes. A record that exists
// but cannot be read is an error: the agent does not start rather than
// overwrite what it could not read.
func (a *Agent) loadRecord() error {
	boot, err := supervisor.BootID()
	if err != nil && !errors.Is(err, supervisor.ErrUnsupported) {
		a.log.Warn("cannot read the boot id; re-adoption will rely on start times only where they are wall-clock times", "err", err)
	}
	a.recovery.bootID = boot
	dir, err := filepath.Abs(a.cfg.Agent.AgentDataDir)
	if err != nil {
		return fmt.Errorf("agent data dir: %w", err)
	}
	a.recovery.markerDir = dir

	rec, err := a.store.Load()
	switch {
	case err == nil:
		a.setRecord(rec)
		return nil
	case errors.Is(err, state.ErrCorrupt):
		moved, merr := a.store.MoveAside(time.Now())
		if merr != nil {
			return fmt.Errorf("%w; moving it aside failed too: %w (move it aside by hand to start)", err, merr)
		}
		a.log.Error("node record is corrupt: moved it aside and rebuilding it from the running nodes",
			"err", err, "moved_to", moved)
		a.setRecord(rec)
		a.recovery.movedTo = moved
		return nil
	default:
		return fmt.Errorf("node record: %w (the agent does not overwrite a record it cannot read: fix its permissions or move it aside)", err)
	}
}

// setRecord makes rec the node record held in memory.
func (a *Agent) setRecord(rec state.Record) {
	if rec.Nodes == nil {
		rec.Nodes = map[string]state.Node{}
	}
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	a.rec.nodes = rec.Nodes
}

// markerEnv is the environment that marks node n, started from entry, as
// this agent's.
func (a *Agent) markerEnv(n state.Node, entry cache.Entry) []string {
	return []string{
		envAgentData + "=" + a.recovery.markerDir,
		envNodeID + "=" + n.NodeID,
		envVersion + "=" + entry.Version,
		envChecksum + "=" + entry.Checksum,
	}
}

// adopt re-attaches to the recorded nodes that still run (full identity
// match), then to the running nodes marked as this agent's that the record
// lacks.
func (a *Agent) adopt() {
	nodes := a.rec.snapshot()
	for _, id := range sortedKeys(nodes) {
		n := nodes[id]
		if n.PID == 0 {
			continue
		}
		entry := cache.Entry{Path: n.BinaryPath, Checksum: n.Checksum, Version: n.Version}
		id := supervisor.Identity{PID: n.PID, StartTime: n.StartTime, BootID: n.BootID}
		if err := a.sup.AdoptIdentity(a.spec(n, entry), id); err != nil {
			a.log.Info("recorded node is not running (or its pid is another process now); it will be started again if desired",
				"node", n.NodeID, "pid", n.PID, "err", err)
			continue
		}
		a.log.Info("re-adopted running node", "node", n.NodeID, "pid", n.PID, "port", n.Port, "version", n.Version)
	}
	a.recoverMarked()
}

// recoverMarked adopts the running nodes marked as this agent's that adopt
// did not find through the record, and records them.
func (a *Agent) recoverMarked() {
	moved := a.recovery.movedTo
	found, err := a.sup.FindMarked(envAgentData, a.recovery.markerDir)
	if errors.Is(err, supervisor.ErrUnsupported) {
		if moved != "" {
			a.log.Error("cannot rebuild the node record from running processes on this OS; nodes still running from before are not re-adopted: stop them before their copies start",
				"moved_to", moved)
		}
		return
	}
	if err != nil {
		a.log.Error("scan for running nodes", "err", err)
		return
	}
	// The oldest process of a node first: a younger copy is a duplicate.
	slices.SortFunc(found, func(x, y supervisor.Marked) int {
		if x.StartTime != y.StartTime {
			if x.StartTime < y.StartTime {
				return -1
			}
			return 1
		}
		return x.PID - y.PID
	})
	var recovered []string
	for _, m := range found {
		n, err := a.markedNode(m)
		if err != nil {
			a.log.Warn("process carries this agent's marker but is not adopted", "pid", m.PID, "err", err)
			continue
		}
		if st, ok := a.sup.NodeStatus(n.NodeID); ok {
			if st.PID != m.PID {
				a.log.Warn("another process carries a running node's marker; left alone", "node", n.NodeID, "pid", m.PID, "node_pid", st.PID)
			}
			continue
		}
		entry := cache.Entry{Path: n.BinaryPath, Checksum: n.Checksum, Version: n.Version}
		if err := a.sup.AdoptIdentity(a.spec(n, entry), m.Identity); err != nil {
			a.log.Warn("cannot adopt marked node process", "node", n.NodeID, "pid", m.PID, "err", err)
			continue
		}
		note := fmt.Sprintf("re-adopted running process %d, which the agent's node record did not name", m.PID)
		if moved != "" {
			note = fmt.Sprintf("re-adopted running process %d after the corrupt node record was moved aside to %s", m.PID, moved)
		}
		if old, ok := a.rec.get(n.NodeID); ok && n.Checksum == "" {
			n.Checksum, n.Version = old.Checksum, old.Version
		}
		a.rec.put(n)
		a.notes.set(n.NodeID, note)
		recovered = append(recovered, n.NodeID)
		a.log.Warn("recovered running node missing from the node record", "node", n.NodeID, "pid", m.PID,
			"port", n.Port, "version", n.Version, "data", n.DataDir)
	}
	if len(recovered) > 0 {
		a.rec.save()
	}
	if moved != "" || len(recovered) > 0 {
		a.log.Warn("node record rebuilt from running nodes", "recovered", recovered, "corrupt_record_kept_at", moved)
	}
}

// markedNode is the record of the node a marked process runs, from its
// environment; every value is checked, since any process of this user can
// carry any environment.
func (a *Agent) markedNode(m supervisor.Marked) (state.Node, error) {
	id := m.Env[envNodeID]
	if err := ident.Validate("node", id); err != nil {
		return state.Node{}, fmt.Errorf("%s: %w", envNodeID, err)
	}
	port, err := strconv.Atoi(m.Env["STORAGE_PORT"])
	if err != nil || port < 1 || port > 65535 {
		return state.Node{}, fmt.Errorf("node %s: invalid STORAGE_PORT %q", id, m.Env["STORAGE_PORT"])
	}
	dataDir := m.Env["STORAGE_PATH"]
	if !filepath.IsAbs(dataDir) {
		return state.Node{}, fmt.Errorf("node %s: STORAGE_PATH %q is not absolute", id, dataDir)
	}
	exe := strings.TrimSuffix(m.Exe, " (deleted)")
	if !a.trustedExe(exe) {
		return state.Node{}, fmt.Errorf("node %s: runs %s, which is neither storage.binary_path nor in the agent's cache", id, exe)
	}
	n := state.Node{
		NodeID: id, Port: port, DataDir: dataDir,
		PID: m.PID, StartTime: m.StartTime, BootID: m.BootID, BinaryPath: exe,
	}
	if v, sum := m.Env[envVersion], m.Env[envChecksum]; len(v) <= 64 && !strings.ContainsAny(v, "/\\\x00") && isHexSHA256(sum) {
		n.Version, n.Checksum = v, sum
	}
	return n, nil
}

// trustedExe reports whether exe is a storage-server the agent starts: the
// configured binary_path, or a file inside the cache directory.
func (a *Agent) trustedExe(exe string) bool {
	if !filepath.IsAbs(exe) {
		return false
	}
	resolve := func(p string) string {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	if bp := a.cfg.Storage.BinaryPath; bp != "" {
		return resolve(bp) == resolve(exe) || filepath.Clean(bp) == exe
	}
	for _, root := range []string{a.cfg.Agent.CacheDir, resolve(a.cfg.Agent.CacheDir)} {
		if root == "" {
			continue
		}
		root, _ = filepath.Abs(root)
		if rel, err := filepath.Rel(root, exe); err == nil && rel != "." && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel) {
			return true
		}
	}
	return false
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
