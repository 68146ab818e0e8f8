//go:build !windows

package catalog

import (
	"os"
	"syscall"
)

// sysID returns the device and inode of fi, which identify the file on disk
// independently of its name, and its status-change time (ctime), which the
// kernel updates on every write, truncate, chmod or rename and which no
// user-space call can set back, unlike the modification time.
func sysID(fi os.FileInfo) (dev, ino uint64, ctimeNS int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino), ctime(st) //nolint:unconvert // Dev is int32 on darwin
	}
	return 0, 0, 0
}
