//go:build unix

package fetch

import (
	"errors"
	"syscall"
)

// isNoSpace reports a write that failed because the file system is full
// (or the user's quota is exhausted).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
