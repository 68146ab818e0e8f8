package upgrade

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// GuardOptions configures Guard.
type GuardOptions struct {
	// DataDir holds upgrade.json. Required.
	DataDir string
	// ID is the upgrade this guard protects; it exits when the state names
	// another. Required.
	ID string
	// Poll is how often the state is read (default 1 s).
	Poll time.Duration
	// LogTail, when set, supplies log lines recorded with the rollback.
	LogTail func(n int) []string
	// AfterRollback, when set, runs after the previous binary was restored,
	// e.g. to ask the service manager to start the service again when its
	// start limit stopped a crash-looping new binary.
	AfterRollback func(ctx context.Context) error
	// Logger (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Guard watches an upgrade from outside the new agent. It returns when the
// upgrade is no longer being watched (committed, rolled back, replaced by
// another upgrade) or when ctx ends. If the deadline plus the grace period
// passes while the upgrade is still watched, it restores the previous binary,
// records the version as failed and returns.
func Guard(ctx context.Context, opts GuardOptions) error {
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DataDir == "" || opts.ID == "" {
		return errors.New("upgrade guard: DataDir and ID are required")
	}
	c := core{dataDir: opts.DataDir, log: opts.Logger, now: opts.Now, logTail: opts.LogTail, lockWait: defaultLockWait}
	log := opts.Logger.With("upgrade", opts.ID)
	readErrors := 0
	for {
		s, err := ReadState(opts.DataDir)
		switch {
		case err != nil:
			// A state we cannot read cannot be acted on; give up after a
			// minute of trying rather than linger for ever.
			readErrors++
			log.Warn("upgrade guard: read state", "err", err)
			if readErrors*int(opts.Poll/time.Millisecond) > 60_000 {
				return fmt.Errorf("upgrade guard: %w", err)
			}
		case s.ID != opts.ID || s.Phase != PhaseWatching:
			log.Info("upgrade guard: nothing left to guard", "phase", s.Phase, "state_id", s.ID)
			return nil
		case opts.Now().Unix() >= s.Deadline+s.GuardGraceSeconds:
			rolled, err := guardRollback(c, opts.ID)
			if err != nil {
				return err
			}
			if rolled && opts.AfterRollback != nil {
				if err := opts.AfterRollback(ctx); err != nil {
					log.Error("upgrade guard: after rollback", "err", err)
				}
			}
			return nil
		default:
			readErrors = 0
		}
		t := time.NewTimer(opts.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// guardRollback rolls back under the lock if the upgrade is still watched.
func guardRollback(c core, id string) (bool, error) {
	unlock, err := lockState(c.dataDir, c.wait())
	if err != nil {
		return false, err
	}
	defer unlock()
	s, err := ReadState(c.dataDir)
	if err != nil {
		return false, err
	}
	if s.ID != id || s.Phase != PhaseWatching {
		return false, nil
	}
	why := fmt.Sprintf("%s did not register and heartbeat within the window (deadline %s; the guard acted)",
		s.ToVersion, time.Unix(s.Deadline, 0).UTC().Format(time.RFC3339))
	if _, err := c.rollbackLocked(s, "guard", why); err != nil {
		return false, err
	}
	return true, nil
}

// GuardMain is the body of the "upgrade-guard" sub-command: it parses
// "--data-dir D --id ID" from args and runs Guard with opts (whose DataDir
// and ID it sets). It returns the process exit code: 0 done, 1 failed, 2 usage.
func GuardMain(ctx context.Context, args []string, opts GuardOptions, stderr io.Writer) int {
	fl := flag.NewFlagSet(GuardCommand, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "agent data dir holding upgrade.json")
	fl.StringVar(&opts.ID, "id", opts.ID, "upgrade id to guard")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if opts.DataDir == "" || opts.ID == "" || fl.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: "+GuardCommand+" --data-dir DIR --id ID")
		return 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	opts.Logger.Info("upgrade guard started", "pid", os.Getpid(), "data_dir", opts.DataDir, "id", opts.ID)
	if err := Guard(ctx, opts); err != nil {
		opts.Logger.Error("upgrade guard failed", "err", err)
		return 1
	}
	return 0
}

// SpawnGuard starts exe with args as a detached process (its own session on
// Unix, a detached new process group on Windows) whose output goes to
// logPath, and returns its pid without waiting for it. Give it the previous
// binary, never the executable path, which holds the new version.
func SpawnGuard(exe string, args []string, logPath string) (int, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("start upgrade guard: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = detached()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start upgrade guard %s: %w", exe, err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

// startGuard starts the guard from the previous binary of s and sets
// s.GuardPID; the caller records s. A guard that cannot start is logged:
// Begin, Watch and Check still roll back a failing version.
func (u *Upgrader) startGuard(s *State) bool {
	if u.opts.NoGuard {
		return false
	}
	args := append(append([]string{}, u.opts.GuardArgs...), "--data-dir", u.opts.DataDir, "--id", s.ID)
	pid, err := SpawnGuard(s.OldPath, args, filepath.Join(u.opts.DataDir, "upgrade-guard.log"))
	if err != nil {
		u.opts.Logger.Warn("start upgrade guard (Begin and Watch still roll back a failing version)", "err", err)
		return false
	}
	s.GuardPID = pid
	u.opts.Logger.Info("upgrade guard started", "pid", pid, "binary", s.OldPath)
	return true
}
