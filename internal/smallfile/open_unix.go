//go:build unix

package smallfile

import (
	"os"
	"syscall"
)

// openNoBlock opens path for reading; O_NONBLOCK makes the open of a FIFO
// with no writer (or of a device) return at once. On a regular file it
// changes nothing.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
