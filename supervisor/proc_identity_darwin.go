package supervisor

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// startTimeAbsolute: macOS start times are wall-clock seconds, so a process
// of another boot does not carry a recorded start time.
const startTimeAbsolute = true

// BootID returns an id of the current boot: kern.bootsessionuuid, or the
// boot time (kern.boottime, hex) on systems without it.
func BootID() (string, error) {
	if id, err := syscall.Sysctl("kern.bootsessionuuid"); err == nil && strings.TrimSpace(id) != "" {
		return strings.TrimSpace(id), nil
	}
	raw, err := syscall.Sysctl("kern.boottime")
	if err != nil || raw == "" {
		return "", fmt.Errorf("read boot id: %w", errors.Join(err, ErrUnsupported))
	}
	return "boottime-" + hex.EncodeToString([]byte(raw)), nil
}

// ProcessExe returns the executable pid runs, as `ps -o comm=` reports it
// (the path it was started from).
func ProcessExe(pid int) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	cmd := exec.Command("/bin/ps", "-o", "comm=", "-p", strconv.Itoa(pid))
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.Output()
	exe := strings.TrimSpace(string(out))
	var ee *exec.ExitError
	if errors.As(err, &ee) && exe == "" {
		return "", fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return "", fmt.Errorf("ps -p %d: %w", pid, err)
	}
	return exe, nil
}

// ProcessArgs is not available here (ps joins arguments with spaces).
func ProcessArgs(pid int) ([]string, error) {
	return nil, fmt.Errorf("command line of pid %d: %w", pid, ErrUnsupported)
}

// FindMarked is not supported on macOS: a lost node record cannot be
// rebuilt from the running processes.
func FindMarked(key, value string) ([]Marked, error) {
	return nil, fmt.Errorf("find marked processes: %w", ErrUnsupported)
}
