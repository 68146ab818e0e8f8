//go:build !windows

package upgrade

import "syscall"

// detached puts the guard in its own session: no controlling terminal, and
// a signal to the agent's process group does not reach it.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
