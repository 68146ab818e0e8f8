//go:build !windows

package catalog

import (
	"os"
	"syscall"
)

// sysID returns the device and inode of fi, which identify the file on disk
// independently of its name.
func sysID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // Dev is int32 on darwin
	}
	return 0, 0
}
