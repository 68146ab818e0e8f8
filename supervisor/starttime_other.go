//go:build !linux && !darwin && !windows

package supervisor

import "fmt"

// ProcessStartTime is not supported on this platform; adoption is not possible.
func ProcessStartTime(pid int) (uint64, error) {
	return 0, fmt.Errorf("pid %d: %w", pid, ErrUnsupported)
}
