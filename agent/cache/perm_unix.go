//go:build unix

package cache

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// noFollow makes an open fail on a symlink instead of following it.
const noFollow = syscall.O_NOFOLLOW

// checkPrivate refuses a directory that another user could write to: group-
// or world-writable, or owned by another uid than the agent's.
func checkPrivate(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s is writable by other users (mode %04o), who could replace the binaries the agent runs; run `chmod go-w %s` (or set agent.cache_dir / SUTRA_CACHE_DIR to a directory only the agent's user can write)",
			ErrUnsafeDir, path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); int(st.Uid) != uid {
			return fmt.Errorf("%w: %s is owned by uid %d, not by the agent's uid %d, so that user could replace the binaries the agent runs; run `chown -R %d %s` (or set agent.cache_dir / SUTRA_CACHE_DIR to a directory of the agent's user)",
				ErrUnsafeDir, path, st.Uid, uid, uid, path)
		}
	}
	return nil
}

// linkCount is the number of hard links of a file.
func linkCount(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
