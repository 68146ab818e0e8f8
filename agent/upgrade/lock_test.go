//go:build unix

package upgrade

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockHolderEnv makes the test binary a lock holder (see holdLock).
const lockHolderEnv = "UPGRADE_TEST_HOLD_LOCK"

// holdLock takes the state lock of dir, says so on stdout and waits to be
// killed (or for stdin to close).
func holdLock(dir string) int {
	unlock, err := lockState(dir, 10*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	defer unlock()
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// startHolder starts a child process holding dir's lock and returns once it
// holds it.
func startHolder(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("lock holder said %q (%v), want locked", line, err)
	}
	return cmd
}

// A holder killed with SIGKILL leaves no stale lock: the lock is free at
// once (the O_EXCL lock file of old stayed for 2 minutes).
func TestLockReleasedWhenHolderKilled(t *testing.T) {
	dir := t.TempDir()
	holder := startHolder(t, dir)

	if unlock, err := lockState(dir, 100*time.Millisecond); err == nil {
		unlock()
		t.Fatal("lockState while another process holds the lock = nil error, want busy")
	}
	if err := holder.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()
	// The kernel dropped the lock with the process: no waiting for it to age.
	unlock, err := lockState(dir, 0)
	if err != nil {
		t.Fatalf("lockState right after the holder was killed: %v, want the lock", err)
	}
	unlock()
	if _, err := os.Stat(filepath.Join(dir, lockFile)); err != nil {
		t.Errorf("lock file: %v (it must stay; only the OS lock on it comes and goes)", err)
	}
}

// A lock file left by an older agent (the O_EXCL scheme wrote "pid token" in
// it) does not block anyone.
func TestLockIgnoresLeftoverLockFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, lockFile), []byte("12345 deadbeef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockState(dir, 0)
	if err != nil {
		t.Fatalf("lockState with a leftover lock file: %v", err)
	}
	unlock()
}

// Many waiters, in this process and in others: never two holders at once.
func TestLockMutualExclusion(t *testing.T) {
	dir := t.TempDir()
	// Another process holds the lock while the waiters pile up.
	holder := startHolder(t, dir)
	var (
		mu      sync.Mutex
		holders int
		maxSeen int
		wg      sync.WaitGroup
	)
	const waiters, rounds = 8, 25
	errs := make(chan error, waiters)
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				unlock, err := lockState(dir, time.Minute)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				holders++
				maxSeen = max(maxSeen, holders)
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
				mu.Lock()
				holders--
				mu.Unlock()
				unlock()
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	if holders != 0 {
		t.Errorf("%d waiters hold the lock while another process has it", holders)
	}
	mu.Unlock()
	_ = holder.Process.Signal(syscall.SIGKILL)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if maxSeen != 1 {
		t.Errorf("at most %d holders at once, want 1", maxSeen)
	}
}
