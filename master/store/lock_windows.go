//go:build windows

package store

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// tryLockShared takes a shared lock on f unless a writer (a running master,
// which holds bbolt's exclusive lock) has it; ok is false then. It locks the
// byte range bbolt locks (-1..0).
func tryLockShared(f *os.File) (ok bool, err error) {
	const m1 = ^uint32(0)
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0,
		&windows.Overlapped{Offset: m1, OffsetHigh: m1})
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return false, nil
	}
	return err == nil, err
}
