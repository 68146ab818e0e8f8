//go:build windows

package upgrade

import "syscall"

// detachedProcess is DETACHED_PROCESS: no console inherited from the agent.
const detachedProcess = 0x00000008

// detached starts the guard without the agent's console, in a new process
// group so console control events sent to the agent do not reach it.
func detached() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: detachedProcess | syscall.CREATE_NEW_PROCESS_GROUP, HideWindow: true}
}
