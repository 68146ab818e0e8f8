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

// FailuresFileName is the record of failed node upgrades inside the agent
// data directory.
const FailuresFileName = "failed-upgrades.json"

// maxFailures caps the record: the oldest failures are forgotten first.
const maxFailures = 64

// Failure is a storage-server binary that failed a node upgrade on this
// agent. The agent does not start it again — for new nodes, for upgrades or
// as the offline fallback — until the master's desired state names it again
// after naming something else (Superseded) in a generation after the
// failure's (Generation).
type Failure struct {
	Checksum string `json:"checksum"`
	Version  string `json:"version"`
	// Desired is the desired storage-server version ("latest" or exact)
	// that led to the failed binary.
	Desired string `json:"desired"`
	// Generation is the desired-state generation the failure happened at.
	Generation uint64 `json:"generation"`
	// Superseded is set once the desired state named another version.
	Superseded bool   `json:"superseded,omitempty"`
	Reason     string `json:"reason"`
	// At is when the failure happened, in Unix seconds.
	At int64 `json:"at"`
}

// Failures is the whole record, by checksum.
type Failures map[string]Failure

type failuresFile struct {
	Version  int       `json:"version"`
	Failures []Failure `json:"failures"`
}

// FailuresPath is the failure record's path.
func (s *Store) FailuresPath() string { return filepath.Join(filepath.Dir(s.path), FailuresFileName) }

// LoadFailures reads the failed-upgrade record; a missing file is an empty
// record. An unreadable file is an error: the caller must not overwrite it
// blindly (it would forget versions known to be bad).
func (s *Store) LoadFailures() (Failures, error) {
	out := Failures{}
	data, err := os.ReadFile(s.FailuresPath())
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("read %s: %w", s.FailuresPath(), err)
	}
	var f failuresFile
	if err := json.Unmarshal(data, &f); err != nil {
		return out, fmt.Errorf("parse %s: %w", s.FailuresPath(), err)
	}
	for _, x := range f.Failures {
		if x.Checksum != "" {
			out[x.Checksum] = x
		}
	}
	return out, nil
}

// SaveFailures writes the failed-upgrade record atomically, keeping the
// newest failures when there are more than the cap.
func (s *Store) SaveFailures(failures Failures) error {
	list := make([]Failure, 0, len(failures))
	for _, f := range failures {
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].At != list[j].At {
			return list[i].At > list[j].At
		}
		return list[i].Checksum < list[j].Checksum
	})
	if len(list) > maxFailures {
		list = list[:maxFailures]
	}
	data, err := json.MarshalIndent(failuresFile{Version: 1, Failures: list}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode failed-upgrade record: %w", err)
	}
	return atomicfile.Write(s.FailuresPath(), append(data, '\n'), 0o600)
}
