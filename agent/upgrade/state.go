package upgrade

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// Phase is a step of a self-update, as the master shows it.
type Phase string

// The phases, in order. An upgrade ends committed, rolled_back or failed.
const (
	PhaseNone        Phase = ""
	PhaseRequested   Phase = "requested"
	PhaseDownloading Phase = "downloading"
	PhaseVerifying   Phase = "verifying"
	PhaseApplying    Phase = "applying"
	PhaseWatching    Phase = "watching"
	PhaseCommitted   Phase = "committed"
	PhaseRolledBack  Phase = "rolled_back"
	PhaseFailed      Phase = "failed"
)

// active reports whether the phase is an upgrade in progress.
func (p Phase) active() bool {
	switch p {
	case PhaseRequested, PhaseDownloading, PhaseVerifying, PhaseApplying, PhaseWatching:
		return true
	}
	return false
}

func validPhase(p Phase) bool {
	switch p {
	case PhaseNone, PhaseRequested, PhaseDownloading, PhaseVerifying, PhaseApplying,
		PhaseWatching, PhaseCommitted, PhaseRolledBack, PhaseFailed:
		return true
	}
	return false
}

// StateFile is the name of the state file in the agent data dir.
const StateFile = "upgrade.json"

// lockFile serialises read-modify-write of the state file between the agent
// and its guard process.
const lockFile = "upgrade.lock"

// State is the durable record of the current (or last) self-update, kept in
// {agent_data_dir}/upgrade.json and written atomically. Old and new agent
// binaries and the guard process all read and write it.
type State struct {
	// ID names one upgrade attempt; a guard acts only for its own ID.
	ID          string `json:"id,omitempty"`
	Phase       Phase  `json:"phase"`
	FromVersion string `json:"from_version,omitempty"`
	ToVersion   string `json:"to_version,omitempty"`
	// Target is the absolute path of the agent executable (symlinks resolved).
	Target string `json:"target,omitempty"`
	// OldPath keeps the previous binary, beside Target; OldChecksum is its
	// SHA-256, checked before it is restored.
	OldPath     string `json:"old_path,omitempty"`
	OldChecksum string `json:"old_checksum,omitempty"`
	// NewChecksum is the SHA-256 of the applied binary.
	NewChecksum string `json:"new_checksum,omitempty"`
	// Deadline (unix seconds) is when an uncommitted new version is rolled back.
	Deadline int64 `json:"deadline,omitempty"`
	// GuardGraceSeconds is how long after Deadline the guard waits before it
	// restores the old binary itself (the new agent's Watch acts at Deadline).
	GuardGraceSeconds int64 `json:"guard_grace_seconds,omitempty"`
	// Boots counts starts of the new version while watching.
	Boots    int `json:"boots,omitempty"`
	MaxBoots int `json:"max_boots,omitempty"`
	// Starts counts the pre-start checks (Check) of the new version while it
	// is on probation: service-manager starts, including ones that crash
	// before Begin.
	Starts int `json:"starts,omitempty"`
	// GuardPID is the guard process, when one was started.
	GuardPID int `json:"guard_pid,omitempty"`
	// RolledBackBy says who restored the old binary: "watch", "boot", "guard",
	// "check" or "external" (the old binary was found running again).
	RolledBackBy string `json:"rolled_back_by,omitempty"`
	// FailedVersions are never upgraded to automatically again.
	FailedVersions []string `json:"failed_versions,omitempty"`
	// RetryAfter (unix seconds) delays another attempt at ToVersion after a
	// failure that was not the version's fault.
	RetryAfter   int64    `json:"retry_after,omitempty"`
	Message      string   `json:"message,omitempty"`
	LastLogLines []string `json:"last_log_lines,omitempty"`
	// Updated is when the state was last written (unix seconds).
	Updated int64 `json:"updated,omitempty"`
}

// failed reports whether v is in FailedVersions.
func (s *State) failed(v string) bool {
	for _, f := range s.FailedVersions {
		if f == v {
			return true
		}
	}
	return false
}

func (s *State) addFailed(v string) {
	if v != "" && !s.failed(v) {
		s.FailedVersions = append(s.FailedVersions, v)
	}
}

// parseState decodes a state file. Unknown phases are an error: a newer
// agent's state is not silently misread.
func parseState(data []byte) (State, error) {
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("decode %s: %w", StateFile, err)
	}
	if !validPhase(s.Phase) {
		return State{}, fmt.Errorf("decode %s: unknown phase %q", StateFile, s.Phase)
	}
	if s.Boots < 0 || s.MaxBoots < 0 || s.Starts < 0 || s.Deadline < 0 || s.GuardGraceSeconds < 0 {
		return State{}, fmt.Errorf("decode %s: negative counter", StateFile)
	}
	return s, nil
}

// ReadState reads {dataDir}/upgrade.json; a missing file is the zero State.
func ReadState(dataDir string) (State, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read upgrade state: %w", err)
	}
	return parseState(data)
}

func writeState(dataDir string, s State, now time.Time) error {
	s.Updated = now.Unix()
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode upgrade state: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("write upgrade state: %w", err)
	}
	return atomicfile.Write(filepath.Join(dataDir, StateFile), append(data, '\n'), 0o644)
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errSkip ends an update without writing.
var errSkip = errors.New("skip")

// core is what the Upgrader and the guard share.
type core struct {
	dataDir string
	log     *slog.Logger
	now     func() time.Time
	logTail func(n int) []string
	// lockWait bounds the wait for the state lock (default 30 s).
	lockWait time.Duration
}

// wait is how long to wait for the state lock.
func (c core) wait() time.Duration {
	if c.lockWait <= 0 {
		return defaultLockWait
	}
	return c.lockWait
}

// put writes s under the state lock.
func (c core) put(s *State) error {
	unlock, err := lockState(c.dataDir, c.wait())
	if err != nil {
		return err
	}
	defer unlock()
	return c.putLocked(s)
}

func (c core) putLocked(s *State) error {
	s.Updated = c.now().Unix()
	return writeState(c.dataDir, *s, c.now())
}

// update re-reads the state under the lock, applies fn and writes the result
// (unless fn returns errSkip).
func (c core) update(fn func(*State) error) error {
	unlock, err := lockState(c.dataDir, c.wait())
	if err != nil {
		return err
	}
	defer unlock()
	s, err := ReadState(c.dataDir)
	if err != nil {
		return err
	}
	if err := fn(&s); err != nil {
		if errors.Is(err, errSkip) {
			return nil
		}
		return err
	}
	return c.putLocked(&s)
}
