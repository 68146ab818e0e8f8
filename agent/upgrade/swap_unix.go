//go:build !windows

package upgrade

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/minio/selfupdate"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// installBinary puts data (whose SHA-256 is sum) at target, crash-safely: the new
// bytes are written and fsynced beside target, the running binary is kept at
// keep (when keep is not empty), then the new file is renamed over target
// (rename(2) replaces it atomically, so target always names a complete
// binary, old or new) and the directory is fsynced. step is called after
// each durable step.
func installBinary(target string, data, sum []byte, keep string, v *selfupdate.Verifier, step func(string)) error {
	if v != nil {
		if err := v.Verify(data); err != nil {
			return err
		}
	}
	tmp, err := writeBeside(target, ".new", data, sum)
	if err != nil {
		return err
	}
	step(StepNewWritten)
	if keep != "" {
		if err := keepCopy(target, keep); err != nil {
			os.Remove(tmp)
			return err
		}
		step(StepKept)
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install %s: %w", target, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("install %s: %w", target, err)
	}
	step(StepSwapped)
	return nil
}
