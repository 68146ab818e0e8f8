// Package upgrade replaces the running sutra-agent with a newer release and
// rolls it back automatically when the new release does not prove healthy.
//
// Flow (fleet's orbit update runner, made health-gated):
//
//	requested → downloading → verifying → applying → watching → committed
//	                                                           ↘ rolled_back
//	(any step before applying may end in failed; the old binary keeps running)
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
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/selfupdate"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/platform"
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
	if s.Phase.active() && s.ToVersion == desired {
		return false, fmt.Sprintf("upgrade to %s already %s", desired, s.Phase)
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

// Apply upgrades the agent to want (an exact version or "latest") when
// ShouldUpgrade allows it. It returns nil when there is nothing to do,
// ErrRestartRequired when the new binary is installed (the caller must exit),
// and another error when the upgrade failed (the old binary stays; the
// failure is in the state and Status).
func (u *Upgrader) Apply(ctx context.Context, want string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	log := u.opts.Logger
	if u.opts.Fetcher == nil {
		return errors.New("upgrade: no Fetcher configured")
	}
	s, err := ReadState(u.opts.DataDir)
	if err != nil {
		return err
	}
	if ok, why := u.should(s, want); !ok {
		log.Debug("no agent upgrade", "reason", why)
		return nil
	}
	target := want
	var entry *cache.Entry
	if want == Latest {
		if r, ok := u.opts.Fetcher.(resolver); ok {
			info, err := r.Resolve(ctx, Latest)
			if err != nil {
				return fmt.Errorf("upgrade: resolve latest agent: %w", err)
			}
			target = info.Version
		} else {
			e, err := u.opts.Fetcher.Ensure(ctx, Latest)
			if err != nil {
				return fmt.Errorf("upgrade: fetch latest agent: %w", err)
			}
			target, entry = e.Version, &e
		}
		if ok, why := u.should(s, target); !ok {
			log.Debug("no agent upgrade", "latest", target, "reason", why)
			return nil
		}
	}
	now := u.opts.Now()
	s = State{
		ID: randomID(), Phase: PhaseRequested, FromVersion: u.opts.CurrentVersion, ToVersion: target,
		Target: u.opts.Executable, FailedVersions: s.FailedVersions,
		Message: fmt.Sprintf("upgrade %s → %s requested", u.opts.CurrentVersion, target),
	}
	if err := u.core.put(&s); err != nil {
		return err
	}
	log.Info("agent upgrade requested", "from", s.FromVersion, "to", target, "executable", s.Target)
	u.step(StepRequested)

	// fail records a failure that leaves the old binary in place.
	fail := func(stage string, err error, badVersion bool) error {
		s.Phase = PhaseFailed
		s.Message = fmt.Sprintf("%s %s: %v", stage, target, err)
		switch {
		case badVersion:
			s.addFailed(target)
		case ctx.Err() == nil:
			s.RetryAfter = u.opts.Now().Add(u.opts.RetryInterval).Unix()
		}
		if werr := u.core.put(&s); werr != nil {
			log.Error("record failed upgrade", "err", werr)
		}
		log.Error("agent upgrade failed; the current version keeps running", "from", s.FromVersion, "to", target,
			"stage", stage, "err", err, "not_retried", badVersion)
		return fmt.Errorf("upgrade to %s: %s: %w", target, stage, err)
	}

	s.Phase, s.Message = PhaseDownloading, "downloading "+target
	if err := u.core.put(&s); err != nil {
		return err
	}
	e := entry
	if e == nil || e.Version != target {
		got, err := u.opts.Fetcher.Ensure(ctx, target)
		if err != nil {
			return fail("download", err, false)
		}
		e = &got
	}
	if e.Version != target {
		return fail("download", fmt.Errorf("fetcher returned version %s", e.Version), false)
	}
	want32, err := hex.DecodeString(e.Checksum)
	if err != nil || len(want32) != sha256.Size {
		return fail("download", fmt.Errorf("checksum %q is not a hex SHA-256", e.Checksum), false)
	}

	s.Phase, s.Message, s.NewChecksum = PhaseVerifying, "running "+e.Path+" --version", e.Checksum
	if err := u.core.put(&s); err != nil {
		return err
	}
	u.step(StepDownloaded)
	out, err := u.opts.RunVersion(ctx, e.Path)
	if err != nil {
		return fail("verify", fmt.Errorf("%s --version: %w", e.Path, err), ctx.Err() == nil)
	}
	if !versionMatches(out, target) {
		return fail("verify", fmt.Errorf("%s --version printed %q, want %s (the master publishes a mislabelled binary)", e.Path, truncate(out, 200), target), true)
	}

	oldSum, err := hashFile(s.Target)
	if err != nil {
		return fail("apply", fmt.Errorf("hash the running executable: %w", err), false)
	}
	s.Phase, s.OldPath, s.OldChecksum = PhaseApplying, previousPath(s.Target), oldSum
	s.Message = fmt.Sprintf("installing %s at %s (previous kept at %s)", target, s.Target, s.OldPath)
	if err := u.core.put(&s); err != nil {
		return err
	}
	u.step(StepVerified)
	data, err := os.ReadFile(e.Path)
	if err != nil {
		return fail("apply", err, false)
	}
	// The executable path names a complete binary at every instant: the new
	// one is written and fsynced beside it, the running one kept at OldPath,
	// then the new one renamed over it.
	if err := installBinary(s.Target, data, want32, s.OldPath, u.step); err != nil {
		log.Error("install the new agent binary", "err", err)
		return fail("apply", err, false)
	}

	now = u.opts.Now()
	s.Phase, s.Boots, s.MaxBoots = PhaseWatching, 0, u.opts.MaxBoots
	s.Deadline = now.Add(u.opts.Window).Unix()
	s.GuardGraceSeconds = int64((u.opts.GuardGrace + time.Second - 1) / time.Second)
	s.Message = fmt.Sprintf("%s installed; waiting up to %s for it to register and heartbeat", target, u.opts.Window)
	if err := u.core.put(&s); err != nil {
		// The new binary is installed but nothing would roll it back: undo.
		log.Error("record watching state; restoring the previous binary", "err", err)
		if rerr := restore(s, log); rerr != nil {
			return fmt.Errorf("%w: %w (and %w: %v)", ErrRestartRequired, err, ErrRollbackFailed, rerr)
		}
		return fail("apply", err, false)
	}
	u.step(StepWatching)
	u.spawnGuard(&s)
	u.step(StepGuarded)
	log.Info("new agent installed; exiting so the service manager starts it",
		"from", s.FromVersion, "to", target, "window", u.opts.Window, "previous", s.OldPath)
	return ErrRestartRequired
}

func (u *Upgrader) step(name string) {
	if u.opts.StepHook != nil {
		u.opts.StepHook(name)
	}
}

// spawnGuard starts the guard from the previous binary and records its pid.
func (u *Upgrader) spawnGuard(s *State) {
	if u.opts.NoGuard {
		return
	}
	args := append(append([]string{}, u.opts.GuardArgs...), "--data-dir", u.opts.DataDir, "--id", s.ID)
	pid, err := SpawnGuard(s.OldPath, args, filepath.Join(u.opts.DataDir, "upgrade-guard.log"))
	if err != nil {
		u.opts.Logger.Warn("start upgrade guard (Begin and Watch still roll back a failing version)", "err", err)
		return
	}
	s.GuardPID = pid
	if err := u.core.put(s); err != nil {
		u.opts.Logger.Warn("record guard pid", "err", err)
	}
	u.opts.Logger.Info("upgrade guard started", "pid", pid, "binary", s.OldPath)
}

// Begin must be called when the agent starts, before anything else. If this
// is a new version being watched, it counts the boot and rolls back (returning
// ErrRestartRequired) when there were too many boots or the deadline has
// passed. If the previous version is running again while the state says
// watching, the upgrade is recorded as rolled back. An upgrade interrupted
// before its binary was installed is recorded as failed.
func (u *Upgrader) Begin(ctx context.Context) (Status, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	unlock, err := lockState(u.opts.DataDir, u.opts.LockWait)
	if err != nil {
		return Status{}, err
	}
	defer unlock()
	s, err := ReadState(u.opts.DataDir)
	if err != nil {
		return Status{}, err
	}
	cur, log, now := u.opts.CurrentVersion, u.opts.Logger, u.opts.Now()
	switch {
	case s.Phase == PhaseWatching && cur == s.ToVersion:
		s.Boots++
		maxBoots := s.MaxBoots
		if maxBoots == 0 {
			maxBoots = u.opts.MaxBoots
		}
		var why string
		switch {
		case s.Boots > maxBoots:
			why = fmt.Sprintf("%s started %d times without registering and heartbeating", cur, s.Boots)
		case now.Unix() >= s.Deadline:
			why = fmt.Sprintf("%s did not register and heartbeat before the deadline %s", cur, time.Unix(s.Deadline, 0).UTC().Format(time.RFC3339))
		}
		if why != "" {
			s, err = u.core.rollbackLocked(s, "boot", why)
			if err != nil {
				return statusOf(s), err
			}
			return statusOf(s), ErrRestartRequired
		}
		s.Message = fmt.Sprintf("%s started (boot %d of at most %d); waiting for it to register and heartbeat", cur, s.Boots, maxBoots)
		log.Info("new agent version on probation", "version", cur, "boot", s.Boots, "deadline", time.Unix(s.Deadline, 0))
		if err := u.core.putLocked(&s); err != nil {
			return statusOf(s), err
		}
		u.step(StepBooted)
		return statusOf(s), nil
	case s.Phase == PhaseWatching:
		// Someone (a guard that crashed half-way, an operator) put another
		// binary back.
		s.Phase, s.RolledBackBy = PhaseRolledBack, "external"
		if cur == s.FromVersion {
			s.addFailed(s.ToVersion)
		}
		s.Message = fmt.Sprintf("upgrade to %s abandoned: version %s is running again", s.ToVersion, cur)
		log.Warn("agent upgrade was rolled back outside the agent", "to", s.ToVersion, "running", cur)
	case s.Phase == PhaseApplying && cur == s.ToVersion:
		// Installed, but the old agent stopped before recording it.
		s.Phase, s.Boots, s.MaxBoots = PhaseWatching, 1, u.opts.MaxBoots
		s.Deadline = now.Add(u.opts.Window).Unix()
		s.GuardGraceSeconds = int64((u.opts.GuardGrace + time.Second - 1) / time.Second)
		s.Message = fmt.Sprintf("%s started (boot 1); waiting for it to register and heartbeat", cur)
		if err := u.core.putLocked(&s); err != nil {
			return statusOf(s), err
		}
		u.spawnGuardLocked(&s)
	case s.Phase.active():
		s.Phase = PhaseFailed
		s.Message = fmt.Sprintf("upgrade to %s interrupted by an agent restart during %s", s.ToVersion, s.Message)
		s.RetryAfter = 0
		if s.Target != "" {
			// A new binary written beside the executable but never installed.
			_ = os.Remove(sidePath(s.Target, ".new"))
		}
	default:
		return statusOf(s), nil
	}
	if err := u.core.putLocked(&s); err != nil {
		return statusOf(s), err
	}
	return statusOf(s), nil
}

// spawnGuardLocked is spawnGuard for a caller holding the state lock.
func (u *Upgrader) spawnGuardLocked(s *State) {
	if u.opts.NoGuard {
		return
	}
	args := append(append([]string{}, u.opts.GuardArgs...), "--data-dir", u.opts.DataDir, "--id", s.ID)
	pid, err := SpawnGuard(s.OldPath, args, filepath.Join(u.opts.DataDir, "upgrade-guard.log"))
	if err != nil {
		u.opts.Logger.Warn("start upgrade guard", "err", err)
		return
	}
	s.GuardPID = pid
}

// WantCommit records, in memory, that the running agent has registered and
// heartbeated: from now on Watch does not roll back at the deadline but
// waits for Committed to be recorded. It never blocks. The caller must then
// call Committed until it succeeds (Hooks does, on its own goroutine).
func (u *Upgrader) WantCommit() {
	u.wantOnce.Do(func() { close(u.commitWanted) })
}

func (u *Upgrader) commitIsWanted() bool {
	select {
	case <-u.commitWanted:
		return true
	default:
		return false
	}
}

// Committed marks the running new version healthy (call it once it has
// registered with the master and heartbeated). It returns only after the
// committed state is durable (written and fsynced); an error means nothing
// was recorded and the call should be retried. It is a no-op unless this
// version is being watched. If the previous binary was already restored (the
// deadline passed), it returns ErrRestartRequired. The previous binary stays
// at OldPath for a manual rollback until the next upgrade replaces it.
func (u *Upgrader) Committed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var restart, done bool
	err := u.core.update(func(s *State) error {
		switch {
		case s.Phase == PhaseWatching && s.ToVersion == u.opts.CurrentVersion:
			s.Phase = PhaseCommitted
			s.Message = fmt.Sprintf("%s registered and heartbeated; previous binary kept at %s", s.ToVersion, s.OldPath)
			s.Deadline = 0
			done = true
			u.opts.Logger.Info("agent upgrade committed", "from", s.FromVersion, "to", s.ToVersion)
		case s.Phase == PhaseRolledBack && s.ToVersion == u.opts.CurrentVersion:
			restart = true
			return errSkip
		default:
			return errSkip
		}
		return nil
	})
	if done && err == nil {
		u.once.Do(func() { close(u.committed) }) // Watch stops
	}
	if err != nil {
		return err
	}
	if restart {
		return ErrRestartRequired
	}
	return nil
}

// Watch waits, while this version is being watched, for Committed or the
// deadline. At the deadline it rolls back and returns ErrRestartRequired (also
// when the guard rolled back first), unless WantCommit was called before:
// then the agent proved healthy and Watch waits for the commit to be
// recorded instead. It returns nil when there is nothing to watch, on
// Committed, and when ctx ends.
func (u *Upgrader) Watch(ctx context.Context) error {
	s, err := ReadState(u.opts.DataDir)
	if err != nil {
		return err
	}
	if s.Phase != PhaseWatching || s.ToVersion != u.opts.CurrentVersion {
		return nil
	}
	d := time.Unix(s.Deadline, 0).Sub(u.opts.Now())
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-u.committed:
		return nil
	case <-t.C:
	}
	for {
		if u.commitIsWanted() {
			return u.waitCommitted(ctx)
		}
		err := u.watchDeadline(s)
		if err == nil || errors.Is(err, ErrRestartRequired) || errors.Is(err, ErrRollbackFailed) {
			return err
		}
		// The lock or the state could not be had: try again, unless the
		// agent proves healthy meanwhile.
		u.opts.Logger.Warn("agent upgrade deadline passed; could not act on it yet", "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-u.committed:
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// waitCommitted waits for Committed to be recorded (the agent heartbeated
// before the deadline), or ctx.
func (u *Upgrader) waitCommitted(ctx context.Context) error {
	select {
	case <-ctx.Done():
	case <-u.committed:
	}
	return nil
}

// watchDeadline rolls back upgrade s if it is still watched and the agent
// has not heartbeated.
func (u *Upgrader) watchDeadline(s State) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	unlock, err := lockState(u.opts.DataDir, u.opts.LockWait)
	if err != nil {
		return err
	}
	defer unlock()
	if u.commitIsWanted() {
		// Heartbeated while we waited for the lock: the commit follows.
		return nil
	}
	cur, err := ReadState(u.opts.DataDir)
	if err != nil {
		return err
	}
	switch {
	case cur.ID != s.ID || cur.Phase == PhaseCommitted:
		return nil
	case cur.Phase == PhaseRolledBack:
		return ErrRestartRequired
	case cur.Phase != PhaseWatching:
		return nil
	}
	why := fmt.Sprintf("%s did not register and heartbeat within the window (deadline %s)",
		cur.ToVersion, time.Unix(cur.Deadline, 0).UTC().Format(time.RFC3339))
	if _, err := u.core.rollbackLocked(cur, "watch", why); err != nil {
		return err
	}
	return ErrRestartRequired
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

// lastLogLines is how many log lines a rollback records.
const lastLogLines = 20

// rollbackLocked restores the previous binary of s and records the outcome.
// The caller holds the state lock and has just re-read s.
func (c core) rollbackLocked(s State, by, why string) (State, error) {
	c.log.Error("rolling back agent upgrade", "from", s.FromVersion, "to", s.ToVersion, "by", by, "reason", why)
	if c.logTail != nil {
		s.LastLogLines = c.logTail(lastLogLines)
	}
	s.addFailed(s.ToVersion)
	s.Deadline = 0
	if err := restore(s, c.log); err != nil {
		s.Phase = PhaseFailed
		s.Message = fmt.Sprintf("%s; restoring %s failed: %v (reinstall sutra-agent %s at %s by hand)", why, s.FromVersion, err, s.FromVersion, s.Target)
		if werr := c.putLocked(&s); werr != nil {
			c.log.Error("record failed rollback", "err", werr)
		}
		c.log.Error("AGENT ROLLBACK FAILED", "target", s.Target, "previous", s.OldPath, "err", err)
		return s, fmt.Errorf("%w: %w", ErrRollbackFailed, err)
	}
	s.Phase, s.RolledBackBy = PhaseRolledBack, by
	s.Message = fmt.Sprintf("rolled back to %s: %s; %s is not retried automatically", s.FromVersion, why, s.ToVersion)
	if err := c.putLocked(&s); err != nil {
		return s, err
	}
	c.log.Warn("agent upgrade rolled back", "restored", s.FromVersion, "failed_version", s.ToVersion, "by", by)
	return s, nil
}

// restore puts the previous binary back at s.Target. It is idempotent: a
// target that already hashes to s.OldChecksum is left alone.
func restore(s State, log *slog.Logger) error {
	if s.Target == "" || s.OldPath == "" || s.OldChecksum == "" {
		return errors.New("the state names no previous binary")
	}
	if sum, err := hashFile(s.Target); err == nil && sum == s.OldChecksum {
		return nil
	}
	data, err := os.ReadFile(s.OldPath)
	if err != nil {
		return fmt.Errorf("read previous binary: %w", err)
	}
	h := sha256.Sum256(data)
	if hex.EncodeToString(h[:]) != s.OldChecksum {
		return fmt.Errorf("previous binary %s has sha256 %x, recorded %s: not restored", s.OldPath, h, s.OldChecksum)
	}
	if _, err := os.Stat(s.Target); errors.Is(err, os.ErrNotExist) {
		if err := atomicfile.Write(s.Target, data, 0o755); err != nil {
			return err
		}
		return nil
	}
	if err := installBinary(s.Target, data, h[:], "", func(string) {}); err != nil {
		log.Error("restore the previous agent binary; copy "+s.OldPath+" to "+s.Target+" by hand", "err", err)
		return err
	}
	return nil
}

// rollbackError applies selfupdate.RollbackError along the wrap chain.
func rollbackError(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if r := selfupdate.RollbackError(e); r != nil {
			return r
		}
	}
	return nil
}

// previousPath is where the previous binary is kept: beside the executable
// (a rename must not cross file systems), keeping the .exe suffix so that it
// can still be started on Windows.
func previousPath(target string) string { return sidePath(target, ".previous") }

func sidePath(target, tag string) string {
	ext := platform.ExeSuffix(platformName())
	base := strings.TrimSuffix(target, ext)
	return base + tag + ext
}

func platformName() string {
	p, _, _ := platform.Current()
	return p
}

// RunVersion runs "<path> --version" with a 10 s timeout and returns its
// trimmed output.
func RunVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("no answer within 10 s: %w", err)
		}
		return strings.TrimSpace(string(out)), err
	}
	return strings.TrimSpace(string(out)), nil
}

// versionMatches reports whether out names version v as a whole word
// ("1.2.0", "v1.2.0", "sutra-agent 1.2.0").
func versionMatches(out, v string) bool {
	for _, f := range strings.Fields(out) {
		if strings.TrimPrefix(f, "v") == v {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// syncFile fsyncs a file and its directory (selfupdate does neither).
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	serr := f.Sync()
	f.Close()
	if serr != nil && !errors.Is(serr, os.ErrPermission) {
		return serr
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}
