//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// proc is a restartable child: each start is a new process in its own
// process group, its output appended to one log file.
type proc struct {
	name    string
	path    string
	args    []string
	env     []string
	logPath string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	start int    // how many times it was started
	exit  string // how the last process ended
}

// exitStatus is how the last process ended ("" while it runs).
func (p *proc) exitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

func (p *proc) run() error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "chaos: %s (pid %d) exited: %v\n", p.name, cmd.Process.Pid, err)
		p.mu.Lock()
		p.exit = fmt.Sprint(err)
		p.mu.Unlock()
		_ = f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.exit = cmd, done, ""
	p.start++
	p.mu.Unlock()
	return nil
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// alive reports whether the current process runs (stopped counts).
func (p *proc) alive() bool {
	cmd, done := p.current()
	if cmd == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func (p *proc) pid() int {
	cmd, _ := p.current()
	if cmd == nil || !p.alive() {
		return 0
	}
	return cmd.Process.Pid
}

func (p *proc) starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.start
}

// kill9 sends SIGKILL to the process alone (an agent's nodes run in their
// own process groups and survive it, as they would a real crash) and waits.
func (p *proc) kill9() {
	cmd, done := p.current()
	if cmd == nil || !p.alive() {
		return
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT) // a stopped process dies at once either way
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	if pid := p.pid(); pid > 0 {
		_ = syscall.Kill(pid, sig)
	}
}
