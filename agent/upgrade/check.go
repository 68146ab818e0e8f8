package upgrade

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// CheckCommand is the default sub-command that runs CheckMain.
const CheckCommand = "upgrade-check"

// CheckOptions configures Check.
type CheckOptions struct {
	// DataDir holds upgrade.json. Required.
	DataDir string
	// MaxStarts is how many starts of a new version under probation the
	// check lets through; one more restores the previous binary (default:
	// the state's MaxBoots, else 3).
	MaxStarts int
	// LogTail, when set, supplies log lines recorded with the rollback.
	LogTail func(n int) []string
	// Logger (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Check is the restore path that survives a reboot. The service manager runs
// it before every start of the agent (systemd ExecStartPre=), from the
// previous binary kept at OldPath: a binary that ran healthy before the
// update, so a new release that crashes at once cannot disable its own
// check. It reads the persisted upgrade state and counts the start; it
// restores the previous binary (same trust model as every rollback: only if
// it still hashes to the recorded checksum) when the new version
//
//   - was started more than MaxStarts times during its probation (it keeps
//     crashing, whether or not it gets as far as recording its boot), or
//   - is still on probation past its deadline (the guard that would have
//     acted did not survive a reboot), or
//   - is missing from the executable path.
//
// It returns whether it restored. It never starts or stops anything and is
// a no-op when no upgrade is on probation, so it is safe on every start.
func Check(ctx context.Context, opts CheckOptions) (bool, error) {
	if opts.DataDir == "" {
		return false, errors.New("upgrade check: DataDir is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if _, err := os.Stat(opts.DataDir); errors.Is(err, os.ErrNotExist) {
		return false, nil // never upgraded
	}
	c := core{dataDir: opts.DataDir, log: opts.Logger, now: opts.Now, logTail: opts.LogTail, lockWait: defaultLockWait}
	unlock, err := lockState(opts.DataDir, defaultLockWait)
	if err != nil {
		return false, err
	}
	defer unlock()
	s, err := ReadState(opts.DataDir)
	if err != nil {
		return false, err
	}
	if s.Target == "" || s.OldChecksum == "" || s.NewChecksum == "" {
		return false, nil
	}
	if s.Phase != PhaseWatching && s.Phase != PhaseApplying {
		return false, nil
	}
	// Only the new binary (or none) at the executable path is on probation.
	// Another one (an operator or a package put it there; or, while
	// applying, the old agent stopped before installing) is left alone:
	// Begin records what happened when it starts.
	if sum, err := hashFile(s.Target); err == nil && sum != s.NewChecksum {
		return false, nil
	}
	limit := opts.MaxStarts
	if limit <= 0 {
		limit = s.MaxBoots
	}
	if limit <= 0 {
		limit = 3
	}
	s.Starts++
	var why string
	_, statErr := os.Stat(s.Target)
	switch {
	case errors.Is(statErr, os.ErrNotExist):
		why = fmt.Sprintf("the executable %s is missing", s.Target)
	case s.Starts > limit:
		why = fmt.Sprintf("%s was started %d times on probation without committing", s.ToVersion, s.Starts)
	case s.Phase == PhaseWatching && s.Deadline > 0 && opts.Now().Unix() >= s.Deadline:
		why = fmt.Sprintf("%s did not register and heartbeat before its deadline %s", s.ToVersion,
			time.Unix(s.Deadline, 0).UTC().Format(time.RFC3339))
	}
	if why == "" {
		s.Message = fmt.Sprintf("%s on probation: start %d of at most %d", s.ToVersion, s.Starts, limit)
		if err := c.putLocked(&s); err != nil {
			return false, err
		}
		opts.Logger.Info("agent upgrade on probation", "version", s.ToVersion, "start", s.Starts, "max_starts", limit)
		return false, nil
	}
	if _, err := c.rollbackLocked(s, "check", why+" (the pre-start check acted)"); err != nil {
		return false, err
	}
	return true, nil
}

// CheckMain is the body of the "upgrade-check" sub-command: it parses
// "--data-dir D" from args and runs Check. It returns the process exit
// code: 0 (nothing to do or restored), 1 failed, 2 usage. The service
// manager should tolerate a failure (systemd "ExecStartPre=-"): the check
// must never keep a good agent from starting.
func CheckMain(ctx context.Context, args []string, opts CheckOptions, stderr io.Writer) int {
	fl := flag.NewFlagSet(CheckCommand, flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&opts.DataDir, "data-dir", opts.DataDir, "agent data dir holding upgrade.json")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if opts.DataDir == "" || fl.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: "+CheckCommand+" --data-dir DIR")
		return 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	restored, err := Check(ctx, opts)
	if err != nil {
		opts.Logger.Error("upgrade check failed", "err", err)
		return 1
	}
	if restored {
		opts.Logger.Warn("upgrade check restored the previous agent binary")
	}
	return 0
}
