//go:build windows

package catalog

import "os"

// sysID returns zero on Windows, where os.FileInfo carries no file index:
// identity there rests on size and modification time.
func sysID(fi os.FileInfo) (dev, ino uint64) { return 0, 0 }
