//go:build windows

package agentsvc

import (
	"fmt"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"
)

// privileged reports whether this process may install and control services:
// an elevated (Administrator) token.
func privileged() bool { return windows.GetCurrentProcessToken().IsElevated() }

// afterInstall makes the recovery actions kardianos set (restart after
// RestartSec) apply also when the agent stops with an error exit code, not
// only when its process dies: RunAsService reports an agent that ended on its
// own (crash-free error, or exit after a self-update) that way.
func afterInstall() error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service manager: %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(Name)
	if err != nil {
		return fmt.Errorf("open service %s: %w", Name, err)
	}
	defer s.Close()
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return fmt.Errorf("set recovery on non-crash failures: %w", err)
	}
	return nil
}
