//go:build !unix

package testutil

import (
	"errors"
	"os"
)

// Mkfifo makes a named pipe at path with permissions perm, for tests that
// put a FIFO where a regular file is expected (opening one for reading
// blocks until a writer comes). On systems without FIFOs it returns
// errors.ErrUnsupported; callers skip.
func Mkfifo(path string, perm os.FileMode) error {
	return errors.ErrUnsupported
}
