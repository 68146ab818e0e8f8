package upgrade

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// errLockBusy is what tryLock returns while another holder has the lock.
var errLockBusy = errors.New("lock busy")

// lockState takes the cross-process lock of dataDir ({dataDir}/upgrade.lock)
// and returns the func that releases it. The lock is an OS advisory lock
// (flock on Unix, LockFileEx on Windows) held on an open file: the kernel
// drops it when the holder closes the file or dies, so a kill -9 never leaves
// a stale lock, and two waiters can never both hold it. The file itself is
// never removed (removing it would let a second holder lock a new inode).
// Different opens of the file exclude each other within one process too. It
// waits up to wait for a holder to let go.
func lockState(dataDir string, wait time.Duration) (func(), error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock upgrade state: %w", err)
	}
	path := filepath.Join(dataDir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock upgrade state: %w", err)
	}
	give := time.Now().Add(wait)
	delay := time.Millisecond
	for {
		err := tryLock(f)
		if err == nil {
			return func() {
				_ = unlockFile(f)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, errLockBusy) {
			f.Close()
			return nil, fmt.Errorf("lock upgrade state %s: %w", path, err)
		}
		if time.Now().After(give) {
			f.Close()
			return nil, fmt.Errorf("lock upgrade state: %s is held by another running process for more than %s", path, wait)
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}
