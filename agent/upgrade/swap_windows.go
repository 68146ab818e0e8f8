//go:build windows

package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/minio/selfupdate"
)

// installBinary puts data (whose SHA-256 is sum) at target. Windows cannot replace
// a running executable, only rename it away, so selfupdate.Apply does the
// swap (new file beside, target renamed away, new file renamed in, the old
// one put back if that fails). The running binary is first kept at keep as
// an fsynced copy, and the installed file is fsynced. step is called after
// each durable step.
func installBinary(target string, data, sum []byte, keep string, v *selfupdate.Verifier, step func(string)) error {
	if keep != "" {
		if err := keepCopy(target, keep); err != nil {
			return err
		}
		step(StepKept)
	}
	old := sidePath(target, ".replaced")
	err := selfupdate.Apply(bytes.NewReader(data), selfupdate.Options{TargetPath: target, OldSavePath: old, Checksum: sum, Verifier: v})
	if err != nil {
		if rerr := rollbackError(err); rerr != nil {
			return fmt.Errorf("%w; putting the previous binary back failed too (copy %s to %s by hand): %v", err, keep, target, rerr)
		}
		return err
	}
	if err := syncFile(target); err != nil && !errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("fsync %s: %w", target, err)
	}
	// Best effort: the replaced binary may still be running.
	_ = os.Remove(old)
	step(StepSwapped)
	return nil
}
