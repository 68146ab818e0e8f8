package upgrade

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/minio/selfupdate"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

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
	if err := installBinary(s.Target, data, h[:], "", nil, func(string) {}); err != nil {
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
