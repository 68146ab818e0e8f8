package diagnose

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sutragrid/sutra/agent/agentlog"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/agent/upgrade"
	"github.com/sutragrid/sutra/supervisor"
)

// NodeReport is one recorded node and its process.
type NodeReport struct {
	NodeID  string `json:"node_id"`
	Port    int    `json:"port"`
	DataDir string `json:"data_dir"`
	Version string `json:"version,omitempty"`
	PID     int    `json:"pid"`
	// Process is "not running (no pid recorded)", "alive", "dead", or
	// "another process (pid reused)".
	Process    string   `json:"process"`
	Alive      bool     `json:"alive"`
	ExeMatches *bool    `json:"exe_matches,omitempty"`
	BootID     string   `json:"boot_id,omitempty"`
	BootNow    string   `json:"boot_id_now,omitempty"`
	BinaryPath string   `json:"binary_path,omitempty"`
	LogFile    string   `json:"log_file"`
	LastLines  []string `json:"last_log_lines"`
	LogError   string   `json:"log_error,omitempty"`
}

func nodesReport(r *Report, cfg *config.Config, lines int) []NodeReport {
	dir := cfg.Agent.AgentDataDir
	path := filepath.Join(dir, state.FileName)
	out := []NodeReport{}
	data, err := readSmall(path, 64<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return out
	}
	if err != nil {
		r.problem("node record %s: %v", path, err)
		return out
	}
	rec, err := state.Parse(data)
	if err != nil {
		r.problem("node record %s: %v (the agent moves it aside and rebuilds it from the running processes)", path, err)
		return out
	}
	boot, _ := supervisor.BootID()
	ids := make([]string, 0, len(rec.Nodes))
	for id := range rec.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		n := rec.Nodes[id]
		nr := NodeReport{NodeID: n.NodeID, Port: n.Port, DataDir: n.DataDir, Version: n.Version, PID: n.PID,
			BootID: n.BootID, BootNow: boot, BinaryPath: n.BinaryPath,
			LogFile: filepath.Join(dir, "logs", n.NodeID+".log")}
		nr.Process = processState(r, &nr, n, boot)
		nr.LastLines, nr.LogError = lastLines(nr.LogFile, lines, r.secrets)
		if nr.LogError != "" {
			r.problem("node %s log: %s", n.NodeID, nr.LogError)
		}
		out = append(out, nr)
	}
	return out
}

func processState(r *Report, nr *NodeReport, n state.Node, boot string) string {
	if n.PID == 0 {
		return "not running (no pid recorded)"
	}
	if n.BootID != "" && boot != "" && n.BootID != boot {
		r.problem("node %s: recorded pid %d is from an earlier boot; the node is not running", n.NodeID, n.PID)
		return "dead (machine rebooted)"
	}
	st, err := supervisor.ProcessStartTime(n.PID)
	if err != nil {
		r.problem("node %s: recorded pid %d is not running", n.NodeID, n.PID)
		return "dead"
	}
	if n.StartTime != 0 && st != n.StartTime {
		r.problem("node %s: pid %d is another process now (pid reused); the node is not running", n.NodeID, n.PID)
		return "another process (pid reused)"
	}
	nr.Alive = true
	if exe, err := supervisor.ProcessExe(n.PID); err == nil && n.BinaryPath != "" {
		m := sameFile(exe, n.BinaryPath)
		nr.ExeMatches = &m
		if !m {
			r.problem("node %s: pid %d runs %s, not the recorded %s", n.NodeID, n.PID, exe, n.BinaryPath)
			return "alive, other executable"
		}
	}
	return "alive"
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// logWindow is how much of a log's end lastLines reads.
const logWindow = 64 << 10

// lastLines returns the last n lines of a log (redacted), or why not.
func lastLines(path string, n int, secrets []string) ([]string, string) {
	buf, size, err := tailFile(path, logWindow)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	text := strings.TrimRight(string(buf), "\r\n")
	if text == "" {
		return []string{}, ""
	}
	all := strings.Split(text, "\n")
	if size > logWindow && len(all) > 1 {
		all = all[1:] // cut by the window
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for i, l := range all {
		if len(l) > 2048 {
			l = l[:2048] + "…"
		}
		all[i] = RedactText(l, secrets)
	}
	return all, ""
}

// UpgradeReport is the agent's own self-update state.
type UpgradeReport struct {
	File        string    `json:"file"`
	Phase       string    `json:"phase"`
	FromVersion string    `json:"from_version,omitempty"`
	ToVersion   string    `json:"to_version,omitempty"`
	Message     string    `json:"message,omitempty"`
	Updated     time.Time `json:"updated,omitzero"`
	Failed      []string  `json:"failed_versions,omitempty"`
	// AgentLog is the last lines of the agent's own log file.
	AgentLogFile string   `json:"agent_log_file"`
	AgentLog     []string `json:"agent_log"`
	Error        string   `json:"error,omitempty"`
}

func upgradeReport(r *Report, dir string) UpgradeReport {
	u := UpgradeReport{File: filepath.Join(dir, upgrade.StateFile), Phase: "none", AgentLogFile: agentlog.Path(dir)}
	var logErr string
	u.AgentLog, logErr = lastLines(u.AgentLogFile, DefaultLogLines, r.secrets)
	if logErr != "" {
		r.problem("agent log %s: %s", u.AgentLogFile, logErr)
	}
	data, err := readSmall(u.File, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return u
	}
	if err != nil {
		u.Error = err.Error()
		r.problem("upgrade state %s: %v", u.File, err)
		return u
	}
	var s upgrade.State
	if err := json.Unmarshal(data, &s); err != nil {
		u.Error = err.Error()
		r.problem("upgrade state %s does not parse: %v", u.File, err)
		return u
	}
	if s.Phase != "" {
		u.Phase = string(s.Phase)
	}
	u.FromVersion, u.ToVersion, u.Failed = s.FromVersion, s.ToVersion, s.FailedVersions
	u.Message = RedactText(s.Message, r.secrets)
	if s.Updated > 0 {
		u.Updated = time.Unix(s.Updated, 0).UTC()
	}
	switch u.Phase {
	case "failed", "rolled_back":
		r.warn("the last self-update (%s -> %s) ended %s: %s", s.FromVersion, s.ToVersion, u.Phase, u.Message)
	}
	return u
}

// String is a one-line summary of a node (text output).
func (n NodeReport) String() string {
	return fmt.Sprintf("%s port %d pid %d: %s", n.NodeID, n.Port, n.PID, n.Process)
}
