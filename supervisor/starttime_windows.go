package supervisor

import (
	"errors"
	"fmt"
	"syscall"
)

const (
	processQueryLimitedInformation = 0x1000
	stillActive                    = 259
)

var errESRCH error = syscall.Errno(87) // ERROR_INVALID_PARAMETER, // OpenProcess's answer for an unknown pid

// ProcessStartTime returns an identity token for the live process pid: its
// creation time (GetProcessTimes, 100 ns units since 1601). A process that
// has exited counts as not running (ErrNoProcess), even while someone still
// holds a handle to it.
func ProcessStartTime(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	h, err := syscall.OpenProcess(processQueryLimitedInformation, false, uint32(pid))
	if err != nil {
		if errors.Is(err, errESRCH) {
			return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return 0, fmt.Errorf("open process %d: %w", pid, err)
	}
	defer syscall.CloseHandle(h)
	var code uint32
	if err := syscall.GetExitCodeProcess(h, &code); err != nil {
		return 0, fmt.Errorf("exit code of %d: %w", pid, err)
	}
	if code != stillActive {
		return 0, fmt.Errorf("pid %d exited with %d: %w", pid, code, ErrNoProcess)
	}
	var created, exited, kernel, user syscall.Filetime
	if err := syscall.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0, fmt.Errorf("process times of %d: %w", pid, err)
	}
	return uint64(created.HighDateTime)<<32 | uint64(created.LowDateTime), nil
}
