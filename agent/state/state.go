// Package state records, in the agent's data directory, what the agent runs:
// for every storage node its port and data directory (stable across restarts)
// and, while it runs, its pid, process start time and the checksum of the
// binary it was started from. A restarted agent reads the record to re-adopt
// nodes that are still alive and match, instead of starting duplicates.
//
// The file is JSON, written atomically (temp file, fsync, rename), so a crash
// leaves either the previous record or the new one.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// FileName is the record's name inside the agent data directory.
const FileName = "nodes.json"

// Node is what the agent remembers about one storage node.
type Node struct {
	NodeID  string `json:"node_id"`
	Port    int    `json:"port"`
	DataDir string `json:"data_dir"`
	// The fields below describe the running process; PID 0 means not running.
	PID int `json:"pid,omitempty"`
	// StartTime identifies the process beyond its pid (pid reuse), in the
	// platform's own unit (clock ticks since boot on Linux).
	StartTime  uint64 `json:"start_time,omitempty"`
	BinaryPath string `json:"binary_path,omitempty"`
	Checksum   string `json:"checksum,omitempty"`
	Version    string `json:"version,omitempty"`
}

// Record is the whole file.
type Record struct {
	Version int             `json:"version"`
	Nodes   map[string]Node `json:"nodes"`
}

// Store reads and writes the record in one directory.
type Store struct {
	path string
}

// Open returns a store for dir, creating dir if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent data dir %s: %w", dir, err)
	}
	return &Store{path: filepath.Join(dir, FileName)}, nil
}

// Path is the record's file path.
func (s *Store) Path() string { return s.path }

// Load reads the record; a missing file is an empty record.
func (s *Store) Load() (Record, error) {
	rec := Record{Version: 1, Nodes: map[string]Node{}}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("read %s: %w", s.path, err)
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return Record{Version: 1, Nodes: map[string]Node{}}, fmt.Errorf("parse %s: %w (move it aside to start fresh; running nodes will not be re-adopted)", s.path, err)
	}
	if rec.Nodes == nil {
		rec.Nodes = map[string]Node{}
	}
	return rec, nil
}

// Save writes the record atomically.
func (s *Store) Save(rec Record) error {
	rec.Version = 1
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node record: %w", err)
	}
	return atomicfile.Write(s.path, append(data, '\n'), 0o600)
}

// UsedPorts returns the ports of every recorded node, sorted.
func (r Record) UsedPorts() []int {
	ports := make([]int, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		if n.Port > 0 {
			ports = append(ports, n.Port)
		}
	}
	sort.Ints(ports)
	return ports
}
