//go:build unix

package supervisor

import (
	"errors"
	"os/exec"
	"syscall"
)

// setGroupAttr starts the child in a new process group whose id is its pid,
// so that signalling -pid reaches everything the node started.
func setGroupAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// group is the process group of one node.
type group struct{ pid int }

func newChildGroup(cmd *exec.Cmd) (*group, error) { return &group{pid: cmd.Process.Pid}, nil }

func adoptGroup(pid int) (*group, error) { return &group{pid: pid}, nil }

// term asks the whole group to stop (SIGTERM).
func (g *group) term() error { return g.signal(syscall.SIGTERM) }

// kill kills the whole group (SIGKILL).
func (g *group) kill() error { return g.signal(syscall.SIGKILL) }

// release forgets the group without signalling it.
func (g *group) release() {}

// signal signals the group -pid; when no such group exists (an adopted
// process that is not a group leader), the process alone.
func (g *group) signal(sig syscall.Signal) error {
	err := syscall.Kill(-g.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		err = syscall.Kill(g.pid, sig)
	}
	if errors.Is(err, syscall.ESRCH) {
		return nil // already gone
	}
	return err
}

// killStragglers kills what is left of the group after its leader exited
// (a grandchild that outlived the node). Errors mean nothing is left.
func (g *group) killStragglers() { _ = syscall.Kill(-g.pid, syscall.SIGKILL) }
