package agentsvc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// StartAfterRollback gets the agent's service running again after the
// self-update guard restored the previous binary (pass it as
// upgrade.GuardOptions.AfterRollback). A release that crashes at start-up is
// restarted every RestartSec until systemd's start limit (StartLimitBurst
// starts within StartLimitIntervalSec) gives up on the unit, which happens
// well before the guard acts at the end of the probation window; the unit then
// stays failed and nothing would start the restored binary.
//
// It acts only when the calling process runs in the agent's unit (the guard
// inherits the agent's cgroup; KillMode=process keeps it alive), so an agent
// started by hand, or a service stopped on purpose, is left alone. reset-failed
// clears the start limit; start is a no-op for a unit already running or
// about to restart.
func StartAfterRollback(ctx context.Context) error {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil || !inUnit(string(b), Name+".service") {
		return nil
	}
	for _, args := range [][]string{{"reset-failed", Name + ".service"}, {"start", "--no-block", Name + ".service"}} {
		out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// inUnit reports whether a /proc/self/cgroup text places the process in unit
// (cgroup v2 "0::/system.slice/sutra-agent.service", or any v1 hierarchy).
func inUnit(cgroup, unit string) bool {
	for _, line := range strings.Split(cgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, dir := range strings.Split(parts[2], "/") {
			if dir == unit {
				return true
			}
		}
	}
	return false
}
