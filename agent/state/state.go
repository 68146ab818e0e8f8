// Package state records, in the agent's data directory, what the agent runs:
// for every storage node its port and data directory (stable across restarts)
// and, while it runs, its pid, process start time and the checksum of the
// binary it was started from. A restarted agent reads the record to re-adopt
// nodes that are still alive and match, instead of starting duplicates.
//
// The file is JSON, written atomically (temp file, fsync, rename), so a crash
// leaves either the previous record or the new one. A record that cannot be
// parsed is never overwritten: Load reports ErrCorrupt and the agent moves
// the file aside (MoveAside, kept as nodes.json.corrupt-<time>) before it
// rebuilds the record from the node processes that actually run.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

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
	StartTime uint64 `json:"start_time,omitempty"`
	// BootID is the boot the process started in (supervisor.BootID); with
	// PID, StartTime and the executable (BinaryPath) it must match in full
	// for the process to be re-adopted. Empty in records of older agents.
	BootID     string `json:"boot_id,omitempty"`
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

// ErrCorrupt reports a record that exists but cannot be parsed or holds
// impossible values. The file must not be overwritten: move it aside.
var ErrCorrupt = errors.New("node record is corrupt")

// maxRecordSize caps what Load reads; a real record is a few hundred bytes
// per node.
const maxRecordSize = 64 << 20

// Load reads the record; a missing file is an empty record. A record that
// cannot be parsed or validated is an error wrapping ErrCorrupt; any other
// error (the file exists but cannot be read) means nothing is known and the
// file must be left alone too.
func (s *Store) Load() (Record, error) {
	empty := Record{Version: 1, Nodes: map[string]Node{}}
	// Stat before opening: opening a FIFO planted at the path would block.
	fi, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return empty, nil
	}
	if err != nil {
		return empty, fmt.Errorf("read %s: %w", s.path, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxRecordSize {
		return empty, fmt.Errorf("%s: not a regular file of at most %d bytes: %w", s.path, maxRecordSize, ErrCorrupt)
	}
	f, err := os.Open(s.path)
	if err != nil {
		return empty, fmt.Errorf("read %s: %w", s.path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return empty, fmt.Errorf("read %s: %w", s.path, err)
	}
	if len(data) > maxRecordSize {
		return empty, fmt.Errorf("%s: larger than %d bytes: %w", s.path, maxRecordSize, ErrCorrupt)
	}
	rec, err := Parse(data)
	if err != nil {
		return empty, fmt.Errorf("%s: %w", s.path, err)
	}
	return rec, nil
}

// Parse decodes and validates a record. Errors wrap ErrCorrupt.
func Parse(data []byte) (Record, error) {
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return Record{Version: 1, Nodes: map[string]Node{}}, fmt.Errorf("parse: %v: %w", err, ErrCorrupt)
	}
	if err := rec.validate(); err != nil {
		return Record{Version: 1, Nodes: map[string]Node{}}, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	rec.Version = 1
	if rec.Nodes == nil {
		rec.Nodes = map[string]Node{}
	}
	return rec, nil
}

func (r Record) validate() error {
	if r.Version != 1 {
		return fmt.Errorf("record version %d, want 1", r.Version)
	}
	var errs []error
	for key, n := range r.Nodes {
		switch {
		case key == "" || len(key) > 256 || n.NodeID != key:
			errs = append(errs, fmt.Errorf("node %q: recorded under %q", n.NodeID, key))
		case n.Port < 0 || n.Port > 65535:
			errs = append(errs, fmt.Errorf("node %q: port %d out of range", key, n.Port))
		case n.PID < 0:
			errs = append(errs, fmt.Errorf("node %q: pid %d", key, n.PID))
		}
	}
	return errors.Join(errs...)
}

// MoveAside renames the record to nodes.json.corrupt-<now, UTC> (with a
// counter if that name is taken) and returns the new path. The file is kept
// for the operator; the next Save starts a new record.
func (s *Store) MoveAside(now time.Time) (string, error) {
	base := s.path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	dst := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if i > 1000 {
			return "", fmt.Errorf("move %s aside: too many corrupt copies named %s*", s.path, base)
		}
		dst = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(s.path, dst); err != nil {
		return "", fmt.Errorf("move %s aside: %w", s.path, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(s.path)); err != nil {
		return dst, fmt.Errorf("move %s aside: %w", s.path, err)
	}
	return dst, nil
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
