package upgrade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

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
		u.startGuard(&s)
	case s.Phase.Active():
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
		if u.opts.Ratchet != nil {
			if _, rerr := u.opts.Ratchet.Record("sutra-agent", u.opts.CurrentVersion); rerr != nil {
				u.opts.Logger.Error("cannot record the version for rollback protection", "version", u.opts.CurrentVersion, "err", rerr)
			}
		}
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
