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
	"github.com/sutragrid/sutra/internal/upgradephase"
)

// Phase is a step of a self-update, as the master shows it. The names and
// the legal moves between them are defined once, in internal/upgradephase,
// which the master uses too.
type Phase = upgradephase.Phase

// The phases, in order. An upgrade ends committed, rolled_back or failed.
const (
	PhaseNone        = upgradephase.None
	PhaseRequested   = upgradephase.Requested
	PhaseDownloading = upgradephase.Downloading
	PhaseVerifying   = upgradephase.Verifying
	PhaseApplying    = upgradephase.Applying
	PhaseWatching    = upgradephase.Watching
	PhaseCommitted   = upgradephase.Committed
	PhaseRolledBack  = upgradephase.RolledBack
	PhaseFailed      = upgradephase.Failed
)

// ErrIllegalTransition is wrapped by a state write whose phase change is not
// in upgradephase.Transitions (or that would overwrite another upgrade's
// state): nothing was written.
var ErrIllegalTransition = upgradephase.ErrIllegal

func validPhase(p Phase) bool { return p == PhaseNone || upgradephase.Valid(p) }

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

// putLocked writes s for a caller holding the state lock. It is the one
// writer of the state: it re-reads the state on disk and refuses (logged,
// ErrIllegalTransition, nothing written) a phase change that
// upgradephase.Transitions does not allow, or a change of upgrade ID other
// than the start of a new upgrade (requested), so that no party silently
// overwrites a state it did not read.
func (c core) putLocked(s *State) error {
	cur, err := ReadState(c.dataDir)
	if err != nil {
		return err
	}
	if err := checkMove(cur, *s); err != nil {
		c.log.Error("refused upgrade state change", "err", err, "from_id", cur.ID, "to_id", s.ID,
			"from_phase", cur.Phase, "to_phase", s.Phase)
		return fmt.Errorf("write upgrade state: %w", err)
	}
	s.Updated = c.now().Unix()
	return writeState(c.dataDir, *s, c.now())
}

// checkMove checks that state next may replace state cur: the phase change
// is in the table, and a state of another upgrade attempt (another ID) is
// replaced only by the start of a new one (requested), after the last one
// ended.
func checkMove(cur, next State) error {
	if err := upgradephase.Check(cur.Phase, next.Phase); err != nil {
		return err
	}
	if cur.ID != "" && next.ID != cur.ID && (next.Phase != PhaseRequested || cur.Phase == PhaseRequested) {
		return fmt.Errorf("%w: upgrade %.32q in phase %s would replace upgrade %.32q in phase %s",
			ErrIllegalTransition, next.ID, next.Phase, cur.ID, cur.Phase)
	}
	return nil
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
