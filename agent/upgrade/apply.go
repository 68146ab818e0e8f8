package upgrade

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
)

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
	verifier, err := u.verifyRelease(e, data)
	if err != nil {
		return fail("signature", err, false)
	}
	if err := installBinary(s.Target, data, want32, s.OldPath, verifier, u.step); err != nil {
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
	if u.startGuard(&s) {
		if err := u.core.put(&s); err != nil {
			log.Warn("record guard pid", "err", err)
		}
	}
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
