//go:build windows

package supervisor

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
)

// Windows has no process groups to signal. The closest equivalents:
//   - every child starts with CREATE_NEW_PROCESS_GROUP and is assigned to a
//     job object of its own; kill terminates the job (the node and
//     everything it started after the assignment);
//   - term sends CTRL_BREAK_EVENT to the child's console process group,
//     which Go programs receive as os.Interrupt (storage-server stops
//     gracefully on it). It only works when the agent and the node share a
//     console; otherwise the grace period passes and the job is terminated;
//   - the job is created without JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, so
//     that Detach (stop_nodes_on_exit = false) can leave nodes running;
//   - an adopted process is terminated alone (TerminateProcess): the job
//     created by the previous agent is not re-opened.

var (
	kernel32                     = syscall.NewLazyDLL("kernel32.dll")
	procCreateJobObjectW         = kernel32.NewProc("CreateJobObjectW")
	procAssignProcessToJobObject = kernel32.NewProc("AssignProcessToJobObject")
	procTerminateJobObject       = kernel32.NewProc("TerminateJobObject")
	procGenerateConsoleCtrlEvent = kernel32.NewProc("GenerateConsoleCtrlEvent")
)

const (
	processTerminate = 0x0001
	processSetQuota  = 0x0100
	ctrlBreakEvent   = 1
)

func setGroupAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.CreationFlags |= syscall.CREATE_NEW_PROCESS_GROUP
}

type group struct {
	pid int
	mu  sync.Mutex
	job syscall.Handle
}

func newChildGroup(cmd *exec.Cmd) (*group, error) {
	g := &group{pid: cmd.Process.Pid}
	job, _, err := procCreateJobObjectW.Call(0, 0)
	if job == 0 {
		return g, fmt.Errorf("create job object: %w", err)
	}
	h, err := syscall.OpenProcess(processSetQuota|processTerminate, false, uint32(g.pid))
	if err != nil {
		syscall.CloseHandle(syscall.Handle(job))
		return g, fmt.Errorf("open process %d: %w", g.pid, err)
	}
	defer syscall.CloseHandle(h)
	if ok, _, err := procAssignProcessToJobObject.Call(job, uintptr(h)); ok == 0 {
		syscall.CloseHandle(syscall.Handle(job))
		return g, fmt.Errorf("assign process %d to a job object: %w", g.pid, err)
	}
	g.job = syscall.Handle(job)
	return g, nil
}

func adoptGroup(pid int) (*group, error) { return &group{pid: pid}, nil }

func (g *group) term() error {
	if ok, _, err := procGenerateConsoleCtrlEvent.Call(ctrlBreakEvent, uintptr(g.pid)); ok == 0 {
		return fmt.Errorf("send CTRL_BREAK to %d: %w", g.pid, err)
	}
	return nil
}

func (g *group) kill() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.job != 0 {
		if ok, _, err := procTerminateJobObject.Call(uintptr(g.job), 1); ok == 0 {
			return fmt.Errorf("terminate job of %d: %w", g.pid, err)
		}
		return nil
	}
	h, err := syscall.OpenProcess(processTerminate, false, uint32(g.pid))
	if err != nil {
		return nil // gone
	}
	defer syscall.CloseHandle(h)
	return syscall.TerminateProcess(h, 1)
}

func (g *group) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.job != 0 {
		syscall.CloseHandle(g.job)
		g.job = 0
	}
}

func (g *group) killStragglers() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.job != 0 {
		procTerminateJobObject.Call(uintptr(g.job), 1)
		syscall.CloseHandle(g.job)
		g.job = 0
	}
}
