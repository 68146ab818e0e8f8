// Package upgrade replaces the running sutra-agent with a newer release and
// rolls it back automatically when the new release does not prove healthy.
//
// Flow (fleet's orbit update runner, made health-gated):
//
//	requested → downloading → verifying → applying → watching → committed
//	                                                           ↘ rolled_back
//	(any step before applying may end in failed; the old binary keeps running)
//
// The phase names and the legal moves between them are one table,
// internal/upgradephase.Transitions, shared with the master. The state file
// has one writer (core.putLocked, state.go): it re-reads the state under the
// lock and refuses, with ErrIllegalTransition, a move the table does not
// allow or a write over another upgrade attempt that has not ended; so a new
// upgrade waits until the one on probation is committed or rolled back.
//
// Files: apply.go downloads, verifies and installs (Apply); probation.go
// counts boots, watches the deadline and records the commit (Begin, Watch,
// Committed); restore.go rolls back; state.go is the state file and its
// writer; swap.go the crash-safe swap; guard.go and check.go the two
// out-of-process restorers; hooks.go drives it all from the agent's loop.
//
// Apply downloads the release through the Fetcher (package fetch: streamed
// SHA-256 checked against the master's metadata and verify endpoint, then
// cached), runs "<new> --version" and requires it to print the wanted
// version (this proves the file executes on this machine and is the release
// it claims to be), then installs it crash-safely: the bytes are re-hashed
// against the cached checksum, written beside the executable and fsynced;
// the running binary is kept beside the executable (OldPath, e.g.
// /usr/local/bin/sutra-agent.previous, a hard link or an fsynced copy) with
// its SHA-256 recorded; the new file is renamed over the executable and the
// directory fsynced, so the executable path names a complete binary, old or
// new, at every instant (Windows, which cannot replace a running executable,
// uses selfupdate.Apply's rename-away for that last step). The state becomes
// watching with a deadline, a guard process is started from the previous
// binary, and Apply returns ErrRestartRequired: the caller exits and the
// service manager starts the new binary. Storage nodes are not touched; the
// new agent re-adopts them.
//
// Health gate: the new agent calls Begin first thing at start-up (counting
// boots) and Committed once it has registered with the master and
// heartbeated (Hooks records the commit on a goroutine of its own, retried
// until durable; once the agent has heartbeated, Watch waits for the commit
// rather than roll back). Until then four independent parties can restore
// the previous binary, whichever sees the failure first:
//
//   - Begin, in the new agent, when it has booted more than MaxBoots times
//     (a crash loop that gets as far as Begin) or the deadline has passed;
//   - Watch, in the new agent, when the deadline passes without Committed
//     (it starts but cannot reach the master);
//   - the guard, a detached process running the previous binary, when the
//     deadline plus a grace period passes (a new binary that dies before it
//     reaches Begin, or hangs);
//   - Check, run by the service manager before every start from the previous
//     binary (systemd ExecStartPre=), when the new version was started more
//     than MaxBoots times or its deadline passed: the restore path that
//     survives a reboot, which the guard does not.
//
// Trust model of a rollback: the previous binary is restored only if it still
// hashes to the SHA-256 recorded before the update; otherwise the rollback
// fails loudly (phase failed, message saying to reinstall) rather than
// installing an unknown file. A restore is idempotent: a target that already
// hashes to the previous checksum is left alone. Read-modify-write of the
// state file is serialised across processes with an OS advisory lock on
// {data_dir}/upgrade.lock (flock, LockFileEx), which the kernel releases when
// its holder dies, and every party re-reads the state under the lock before
// acting, so exactly one of them rolls back and the others see
// rolled_back. A version that was rolled back (or whose --version did not
// match) is recorded in FailedVersions and never upgraded to automatically
// again; ClearFailed lets an operator retry it.
package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/ratchet"
	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/semver"
	"github.com/sutragrid/sutra/internal/version"
)

// Errors callers act on.
var (
	// ErrRestartRequired: the executable on disk changed (a new version was
	// applied, or the previous one restored). The caller must stop the agent
	// and exit with a non-zero code so that the service manager starts the
	// binary now at the executable path. Nodes keep running.
	ErrRestartRequired = errors.New("agent executable replaced: exit and let the service manager restart it")
	// ErrRollbackFailed: the previous binary could not be restored; the
	// message says what to do.
	ErrRollbackFailed = errors.New("rollback to the previous agent failed")
)

// Latest asks Apply for the newest version the master publishes.
const Latest = fetch.Latest

// GuardCommand is the default sub-command that runs GuardMain.
const GuardCommand = "upgrade-guard"

// Fetcher gets a verified executable of a sutra-agent version ("latest" or
// exact). *fetch.Fetcher (Artifact "sutra-agent") implements it.
type Fetcher interface {
	Ensure(ctx context.Context, version string) (cache.Entry, error)
}

// resolver is the optional part of a Fetcher used to learn what "latest" is
// without downloading it.
type resolver interface {
	Resolve(ctx context.Context, version string) (httpapi.BinaryInfo, error)
}

// Options configures an Upgrader. Zero values mean the documented defaults.
type Options struct {
	// DataDir holds upgrade.json (config agent.agent_data_dir). Required.
	DataDir string
	// Executable is the agent binary to replace (default: os.Executable with
	// symlinks resolved).
	Executable string
	// CurrentVersion is this binary's version (default version.Version).
	CurrentVersion string
	// Fetcher downloads and verifies releases. Required by Apply only.
	Fetcher Fetcher
	// PublicKeys are the release public keys (config
	// security.release_public_keys); with keys, the new binary is verified
	// against its signature right before the swap (signature.go). The
	// Fetcher must have been made with the same keys.
	PublicKeys []string
	// Ratchet, when set, records each committed agent version (rollback
	// protection: the Fetcher refuses a "latest" below it).
	Ratchet *ratchet.Book
	// Window is how long a new version has to call Committed (default 60 s).
	Window time.Duration
	// MaxBoots is how many starts of the new version Begin accepts while
	// watching; one more rolls back (default 3).
	MaxBoots int
	// GuardGrace is how long after the deadline the guard waits before it
	// restores the previous binary itself (default 10 s).
	GuardGrace time.Duration
	// RetryInterval is how long Apply waits before trying again a version
	// whose upgrade failed for a reason that is not the version's fault (a
	// download error, a full disk) (default 10 min).
	RetryInterval time.Duration
	// GuardArgs are the arguments that make this binary run GuardMain; the
	// guard gets them followed by "--data-dir D --id ID" (default
	// ["upgrade-guard"]).
	GuardArgs []string
	// NoGuard starts no guard process (Begin and Watch still roll back).
	NoGuard bool
	// LogTail, when set, returns up to n last lines of the agent's own log,
	// kept in the state when a rollback happens.
	LogTail func(n int) []string
	// RunVersion runs an executable's --version and returns what it printed
	// (default: "<path> --version" with a 10 s timeout).
	RunVersion func(ctx context.Context, path string) (string, error)
	// StepHook, when set, is called after each durable step of Apply and
	// Begin (the Step… constants). Tests use it to simulate a crash there.
	StepHook func(step string)
	// LockWait is how long a state update waits for the cross-process state
	// lock (default 30 s).
	LockWait time.Duration
	// Logger (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.Executable == "" {
		if exe, err := os.Executable(); err == nil {
			o.Executable = exe
		}
	}
	if o.Executable != "" {
		if abs, err := filepath.Abs(o.Executable); err == nil {
			o.Executable = abs
		}
		if real, err := filepath.EvalSymlinks(o.Executable); err == nil {
			o.Executable = real
		}
	}
	if o.CurrentVersion == "" {
		o.CurrentVersion = version.Version
	}
	if o.Window == 0 {
		o.Window = 60 * time.Second
	}
	if o.MaxBoots == 0 {
		o.MaxBoots = 3
	}
	if o.GuardGrace == 0 {
		o.GuardGrace = 10 * time.Second
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 10 * time.Minute
	}
	if len(o.GuardArgs) == 0 {
		o.GuardArgs = []string{GuardCommand}
	}
	if o.RunVersion == nil {
		o.RunVersion = RunVersion
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockWait == 0 {
		o.LockWait = defaultLockWait
	}
}

// defaultLockWait is how long a state update waits for the state lock.
const defaultLockWait = 30 * time.Second

// Validate reports every invalid option at once (after defaults).
func (o Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("upgrade: DataDir is required"))
	}
	if o.Executable == "" {
		errs = append(errs, errors.New("upgrade: Executable is unknown (set it)"))
	}
	if _, err := semver.Parse(o.CurrentVersion); err != nil {
		errs = append(errs, fmt.Errorf("upgrade: CurrentVersion: %w", err))
	}
	if o.Window < 0 || o.GuardGrace < 0 || o.RetryInterval < 0 || o.LockWait < 0 {
		errs = append(errs, errors.New("upgrade: Window, GuardGrace, RetryInterval and LockWait must not be negative"))
	}
	if o.MaxBoots < 0 {
		errs = append(errs, errors.New("upgrade: MaxBoots must not be negative"))
	}
	return errors.Join(errs...)
}

// Status is what the master sees of the current or last upgrade (convert it
// to controlplane.UpgradeStatus).
type Status struct {
	Phase          Phase
	FromVersion    string
	ToVersion      string
	Message        string
	LastLogLines   []string
	FailedVersions []string
	Updated        time.Time
}

func statusOf(s State) Status {
	st := Status{Phase: s.Phase, FromVersion: s.FromVersion, ToVersion: s.ToVersion, Message: s.Message,
		LastLogLines: s.LastLogLines, FailedVersions: s.FailedVersions}
	if s.Updated != 0 {
		st.Updated = time.Unix(s.Updated, 0).UTC()
	}
	return st
}

// Upgrader runs self-updates of one agent. Its methods are safe for
// concurrent use.
type Upgrader struct {
	opts Options
	core core

	mu        sync.Mutex // serialises Apply, Begin, Committed
	committed chan struct{}
	once      sync.Once
	// commitWanted is closed once the agent has registered and heartbeated
	// (WantCommit): from then on Watch never rolls back, it waits for the
	// commit to be recorded.
	commitWanted chan struct{}
	wantOnce     sync.Once
}

// New validates opts and returns an Upgrader. It touches no file.
func New(opts Options) (*Upgrader, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Upgrader{
		opts:         opts,
		core:         core{dataDir: opts.DataDir, log: opts.Logger, now: opts.Now, logTail: opts.LogTail, lockWait: opts.LockWait},
		committed:    make(chan struct{}),
		commitWanted: make(chan struct{}),
	}, nil
}

// Status returns the current or last upgrade, or nil when there never was one.
func (u *Upgrader) Status() *Status {
	s, err := ReadState(u.opts.DataDir)
	if err != nil {
		u.opts.Logger.Warn("read upgrade state", "err", err)
		return nil
	}
	if s.Phase == PhaseNone && len(s.FailedVersions) == 0 {
		return nil
	}
	st := statusOf(s)
	return &st
}

// ShouldUpgrade reports whether Apply(desired) would start an upgrade, and
// why (or why not). "latest" is resolved by Apply.
func (u *Upgrader) ShouldUpgrade(desired string) (bool, string) {
	s, err := ReadState(u.opts.DataDir)
	if err != nil {
		return false, err.Error()
	}
	return u.should(s, desired)
}

func (u *Upgrader) should(s State, desired string) (bool, string) {
	cur := u.opts.CurrentVersion
	switch {
	case desired == "":
		return false, "no agent version requested"
	case desired == Latest && s.Phase.Active():
		return false, fmt.Sprintf("upgrade to %s is %s; the latest version waits until it is committed or rolled back", s.ToVersion, s.Phase)
	case desired == Latest:
		return true, "tracking the latest version"
	}
	if _, err := semver.Parse(desired); err != nil {
		return false, fmt.Sprintf("desired agent version %q: %v", desired, err)
	}
	if semver.Compare(desired, cur) <= 0 {
		return false, fmt.Sprintf("already at %s (desired %s; downgrades are not automatic)", cur, desired)
	}
	if s.failed(desired) {
		return false, fmt.Sprintf("%s failed before and is not retried automatically (run the agent's upgrade reset or publish a newer version)", desired)
	}
	switch {
	case s.Phase.Active() && s.ToVersion == desired:
		return false, fmt.Sprintf("upgrade to %s already %s", desired, s.Phase)
	case s.Phase.Active():
		// Only a finished upgrade may be replaced (upgradephase.Transitions):
		// a version on probation would otherwise become the "previous"
		// binary of the next upgrade before it proved healthy.
		return false, fmt.Sprintf("upgrade to %s is %s; %s waits until it is committed or rolled back", s.ToVersion, s.Phase, desired)
	}
	if s.Phase == PhaseFailed && s.ToVersion == desired && s.RetryAfter > u.opts.Now().Unix() {
		return false, fmt.Sprintf("upgrade to %s failed at %s (%s); retrying after %s", desired,
			time.Unix(s.Updated, 0).UTC().Format(time.RFC3339), s.Message, time.Unix(s.RetryAfter, 0).UTC().Format(time.RFC3339))
	}
	return true, fmt.Sprintf("upgrade %s → %s", cur, desired)
}

// ClearFailed forgets that version failed, so that it may be applied again.
func (u *Upgrader) ClearFailed(ver string) error {
	return u.core.update(func(s *State) error {
		out := s.FailedVersions[:0]
		for _, f := range s.FailedVersions {
			if f != ver {
				out = append(out, f)
			}
		}
		s.FailedVersions = out
		if s.ToVersion == ver {
			s.RetryAfter = 0
		}
		return nil
	})
}
