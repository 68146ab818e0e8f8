//go:build unix

package catalog

import (
	"os"
	"syscall"
)

// openNoBlock opens name for reading without ever blocking: O_NONBLOCK makes
// open(2) of a FIFO with no writer (or of a device) return at once, where a
// plain open would wait forever. The caller checks with fstat that the handle
// is a regular file; on one, O_NONBLOCK changes nothing.
func openNoBlock(root *os.Root, name string) (*os.File, error) {
	return root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
