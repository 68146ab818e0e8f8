// Package ratchet records, per artifact, the highest version this agent has
// ever committed (verified, signed when release keys are configured, and put
// in its cache), so that a master — compromised, stale or replayed — cannot
// roll the agent back by offering an older release as "latest".
//
// The record is one small JSON file in the agent data dir
// ({agent_data_dir}/versions.ratchet.json, 0644), written crash-safe (temp +
// fsync + rename + fsync dir). It only ever goes up. An unreadable record is
// an error, never an empty one: losing it would silently disable the check.
package ratchet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/semver"
)

// FileName is the record's name in the agent data dir.
const FileName = "versions.ratchet.json"

// maxFile bounds the record read from disk.
const maxFile = 64 << 10

// maxArtifacts bounds the number of artifacts recorded.
const maxArtifacts = 64

// ErrRollback: "latest" resolved to a version lower than one already committed.
var ErrRollback = errors.New("rollback refused")

// Book is the record of one agent data dir. It is safe for concurrent use.
type Book struct {
	path string
	mu   sync.Mutex
}

// Open returns the record kept in dataDir (nothing is read yet).
func Open(dataDir string) *Book { return &Book{path: filepath.Join(dataDir, FileName)} }

// Path is the record's file.
func (b *Book) Path() string { return b.path }

func (b *Book) read() (map[string]string, error) {
	f, err := os.Open(b.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("version ratchet %s: %w", b.path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("version ratchet %s: %w", b.path, err)
	}
	return Parse(data)
}

// Parse decodes a record: artifact → highest committed version.
func Parse(data []byte) (map[string]string, error) {
	if len(data) > maxFile {
		return nil, fmt.Errorf("version ratchet: %d bytes, more than %d", len(data), maxFile)
	}
	m := map[string]string{}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("version ratchet: unreadable (%w); fix or remove the file to reset the rollback protection", err)
	}
	if len(m) > maxArtifacts {
		return nil, fmt.Errorf("version ratchet: %d artifacts, more than %d", len(m), maxArtifacts)
	}
	for a, v := range m {
		if a == "" || len(a) > 128 {
			return nil, fmt.Errorf("version ratchet: invalid artifact name %q", a)
		}
		if _, err := semver.Parse(v); err != nil {
			return nil, fmt.Errorf("version ratchet: %s: %w", a, err)
		}
	}
	return m, nil
}

// Highest returns the highest version of artifact ever committed ("" when none).
func (b *Book) Highest(artifact string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, err := b.read()
	if err != nil {
		return "", err
	}
	return m[artifact], nil
}

// Record raises artifact's highest version to version (a lower or equal one
// changes nothing). It reports whether the record went up.
func (b *Book) Record(artifact, version string) (bool, error) {
	if _, err := semver.Parse(version); err != nil {
		return false, fmt.Errorf("version ratchet: %s %q: %w", artifact, version, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m, err := b.read()
	if err != nil {
		return false, err
	}
	if cur, ok := m[artifact]; ok && semver.Compare(version, cur) <= 0 {
		return false, nil
	}
	m[artifact] = version
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := os.MkdirAll(filepath.Dir(b.path), 0o700); err != nil {
		return false, fmt.Errorf("version ratchet: %w", err)
	}
	if err := atomicfile.Write(b.path, append(data, '\n'), 0o644); err != nil {
		return false, fmt.Errorf("version ratchet: %w", err)
	}
	return true, nil
}

// Check refuses a "latest" that resolved below the highest committed version.
func (b *Book) Check(artifact, latest string) error {
	hi, err := b.Highest(artifact)
	if err != nil {
		return err
	}
	if hi != "" && semver.Compare(latest, hi) < 0 {
		return fmt.Errorf("%w: the master offered %s %s as latest but this agent already committed %s (a rollback must name the version explicitly)",
			ErrRollback, artifact, latest, hi)
	}
	return nil
}
