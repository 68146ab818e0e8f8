package upgrade

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/platform"
)

// Steps of Apply and Begin after which Options.StepHook is called. Each is a
// point where the state and the files on disk are durable: a crash there (a
// kill -9 of every agent process, a power cut) must leave a machine whose
// next start ends on a good binary.
const (
	StepRequested  = "requested"   // state requested recorded
	StepDownloaded = "downloaded"  // new binary cached and checked; state verifying recorded
	StepVerified   = "verified"    // --version matched; state applying recorded
	StepNewWritten = "new-written" // new binary written and fsynced beside the executable
	StepKept       = "kept"        // the running binary kept at OldPath (durably)
	StepSwapped    = "swapped"     // new binary renamed over the executable, directory fsynced
	StepWatching   = "watching"    // state watching recorded
	StepGuarded    = "guarded"     // guard started and its pid recorded
	StepBooted     = "booted"      // Begin counted a boot of the new version
)

// writeBeside writes data to the side file tag of target (removing a stale
// one first), checks its SHA-256 against sum, makes it executable and
// fsyncs it. It returns the side file's path.
func writeBeside(target, tag string, data []byte, sum []byte) (string, error) {
	if h := sha256.Sum256(data); len(sum) != 0 && !bytes.Equal(h[:], sum) {
		return "", fmt.Errorf("new binary has sha256 %x, want %x", h, sum)
	}
	path := sidePath(target, tag)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("remove stale %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// keepCopy makes keep a durable copy of target: a hard link when the file
// system allows one (the same inode: nothing to write), else a copy, made
// under a temporary name and renamed over keep, so keep is always either
// its old content or target's, never half a file.
func keepCopy(target, keep string) error {
	if a, err := os.Stat(target); err == nil {
		if b, err := os.Stat(keep); err == nil && os.SameFile(a, b) {
			return atomicfile.SyncDir(filepath.Dir(keep)) // already kept (a crash after the link)
		}
	}
	tmp := keep + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Link(target, tmp); err != nil {
		if err := copyFileSync(target, tmp); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("keep %s as %s: %w", target, keep, err)
		}
	}
	if err := os.Rename(tmp, keep); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keep %s as %s: %w", target, keep, err)
	}
	// rename(2) of two links to one file does nothing and leaves tmp.
	_ = os.Remove(tmp)
	return atomicfile.SyncDir(filepath.Dir(keep))
}

func copyFileSync(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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
