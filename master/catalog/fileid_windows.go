//go:build windows

package catalog

import (
	"os"
	"syscall"
)

// sysID on Windows: os.FileInfo from a path carries no file index and no
// change time (both need an open handle), so identity rests on size, the last
// write time and the creation time. A rewrite in place that also sets the
// last write time back (SetFileTime) is not detected there; the agent's
// checksum verification still rejects the bytes.
func sysID(fi os.FileInfo) (dev, ino uint64, ctimeNS int64) {
	if d, ok := fi.Sys().(*syscall.Win32FileAttributeData); ok {
		return 0, 0, d.CreationTime.Nanoseconds()
	}
	return 0, 0, 0
}
