//go:build !linux && !darwin && !windows

package supervisor

import "fmt"

const startTimeAbsolute = false

// BootID is not supported on this platform.
func BootID() (string, error) { return "", fmt.Errorf("read boot id: %w", ErrUnsupported) }

// ProcessExe is not supported on this platform.
func ProcessExe(pid int) (string, error) {
	return "", fmt.Errorf("executable of pid %d: %w", pid, ErrUnsupported)
}

// ProcessArgs is not supported on this platform.
func ProcessArgs(pid int) ([]string, error) {
	return nil, fmt.Errorf("command line of pid %d: %w", pid, ErrUnsupported)
}

// FindMarked is not supported on this platform.
func FindMarked(key, value string) ([]Marked, error) {
	return nil, fmt.Errorf("find marked processes: %w", ErrUnsupported)
}
