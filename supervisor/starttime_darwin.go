package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ProcessStartTime returns an identity token for the live process pid: its
// start time in Unix seconds, read with `ps -o lstart=,stat=` (the standard
// library has no sysctl kern.proc.pid). A pid reused by another process
// within the same second would go unnoticed; pid reuse that fast is rare
// on macOS, which allocates pids sequentially. A zombie counts as not
// running (ErrNoProcess).
func ProcessStartTime(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	cmd := exec.Command("/bin/ps", "-o", "lstart=,stat=", "-p", strconv.Itoa(pid))
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(bytes.TrimSpace(out)) == 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return 0, fmt.Errorf("ps -p %d: %w", pid, err)
	}
	return parsePSLine(pid, string(out))
}

func parsePSLine(pid int, line string) (uint64, error) {
	f := strings.Fields(line)
	if len(f) < 6 {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if strings.Contains(f[len(f)-1], "Z") {
		return 0, fmt.Errorf("pid %d is a zombie: %w", pid, ErrNoProcess)
	}
	t, err := time.Parse("Mon Jan _2 15:04:05 2006", strings.Join(f[:5], " "))
	if err != nil {
		return 0, fmt.Errorf("parse start time of pid %d: %w", pid, err)
	}
	return uint64(t.Unix()), nil
}
