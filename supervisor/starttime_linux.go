package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// ProcessStartTime returns an identity token for the live process pid: its
// start time in clock ticks since boot (/proc/<pid>/stat field 22). A pid
// reused by another process has another token. A zombie counts as not
// running (ErrNoProcess).
func ProcessStartTime(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errESRCH) {
			return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return parseProcStat(pid, data)
}

// parseProcStat extracts the start time from a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces and ')', so
// fields are counted from the last ')'.
func parseProcStat(pid int, data []byte) (uint64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields, want at least 22", pid, len(fields)+2)
	}
	if s := fields[0]; len(s) == 1 && (s[0] == 'Z' || s[0] == 'X') {
		return 0, fmt.Errorf("pid %d is a zombie: %w", pid, ErrNoProcess)
	}
	st, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat start time %q: %w", pid, fields[19], err)
	}
	return st, nil
}
