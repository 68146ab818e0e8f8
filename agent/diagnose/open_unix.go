//go:build !windows

package diagnose

import (
	"os"
	"syscall"
)

// openNoBlock opens path for reading without ever blocking: O_NONBLOCK
// makes opening a FIFO return at once (the caller then refuses anything but
// a regular file); on a regular file it changes nothing.
func openNoBlock(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
