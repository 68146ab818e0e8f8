package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// proc is one running incarnation of a node: our own child, or an adopted
// process.
type proc interface {
	pid() int
	startTime() uint64
	adopted() bool
	// done is closed when the process is gone.
	done() <-chan struct{}
	// exit describes how it ended; valid once done is closed.
	exit() string
	// term asks the process group to stop; kill kills it.
	term() error
	kill() error
	// release stops watching without signalling (Detach).
	release()
}

// childProc is a process we started; tracked by its handle (Wait).
type childProc struct {
	cmd      *exec.Cmd
	g        *group
	st       uint64
	ch       chan struct{}
	exitDesc string
	detached atomic.Bool
	// groupErr is a problem setting up the group (Windows job object);
	// the child runs anyway and is stopped by the closest means left.
	groupErr error
}

// startChild starts spec with stdout and stderr appended to logPath.
func startChild(spec Spec, logPath string) (*childProc, error) {
	f, err := openLog(logPath)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", logPath, err)
	}
	defer f.Close() // the child has its own descriptor once started
	fmt.Fprintf(f, "--- %s sutra supervisor: starting %s %s\n", time.Now().UTC().Format(time.RFC3339), spec.Path, strings.Join(spec.Args, " "))
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = f, f
	setGroupAttr(cmd)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(f, "--- sutra supervisor: start failed: %v\n", err)
		return nil, fmt.Errorf("start %s: %w", spec.Path, err)
	}
	c := &childProc{cmd: cmd, ch: make(chan struct{})}
	c.g, c.groupErr = newChildGroup(cmd)
	if st, err := ProcessStartTime(cmd.Process.Pid); err == nil {
		c.st = st
	}
	go func() {
		err := cmd.Wait()
		c.exitDesc = describeExit(err)
		if !c.detached.Load() {
			c.g.killStragglers()
		}
		close(c.ch)
	}()
	return c, nil
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	return err.Error()
}

func (c *childProc) pid() int              { return c.cmd.Process.Pid }
func (c *childProc) startTime() uint64     { return c.st }
func (c *childProc) adopted() bool         { return false }
func (c *childProc) done() <-chan struct{} { return c.ch }
func (c *childProc) exit() string          { return c.exitDesc }

func (c *childProc) gone() bool {
	select {
	case <-c.ch:
		return true
	default:
		return false
	}
}

// term and kill are no-ops once Wait has returned: the pid may belong to
// someone else by then.
func (c *childProc) term() error {
	if c.gone() {
		return nil
	}
	return c.g.term()
}

func (c *childProc) kill() error {
	if c.gone() {
		return nil
	}
	if err := c.g.kill(); err != nil {
		return errors.Join(err, c.cmd.Process.Kill())
	}
	return nil
}

// release leaves the child running; Wait keeps running in the background
// so that the child is reaped if it exits while this process lives on.
func (c *childProc) release() {
	c.detached.Store(true)
	c.g.release()
}

// adoptedProc is a process started by a previous agent: not our child, so
// watched by polling its identity (pid + start time).
type adoptedProc struct {
	p        int
	st       uint64
	g        *group
	ch       chan struct{}
	quit     chan struct{}
	quitOnce sync.Once
	mu       sync.Mutex
	exitDesc string
}

func adoptProc(pid int, st uint64, poll time.Duration) (*adoptedProc, error) {
	cur, err := ProcessStartTime(pid)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	if cur != st {
		return nil, fmt.Errorf("adopt pid %d: start time %d, recorded %d: %w", pid, cur, st, ErrIdentityMismatch)
	}
	g, err := adoptGroup(pid)
	if err != nil {
		return nil, fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	a := &adoptedProc{p: pid, st: st, g: g, ch: make(chan struct{}), quit: make(chan struct{})}
	go a.watch(poll)
	return a, nil
}

func (a *adoptedProc) watch(poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-a.quit:
			return
		case <-t.C:
		}
		cur, err := ProcessStartTime(a.p)
		switch {
		case errors.Is(err, ErrNoProcess):
			a.finish("exited (adopted process: exit status unknown)")
			return
		case err == nil && cur != a.st:
			a.finish("exited (adopted process: pid now belongs to another process)")
			return
		}
		// Other errors are transient (e.g. ps failed); poll again.
	}
}

func (a *adoptedProc) finish(desc string) {
	a.mu.Lock()
	a.exitDesc = desc
	a.mu.Unlock()
	close(a.ch)
}

// alive re-checks the identity right before a signal is sent.
func (a *adoptedProc) alive() bool {
	cur, err := ProcessStartTime(a.p)
	return err == nil && cur == a.st
}

func (a *adoptedProc) pid() int              { return a.p }
func (a *adoptedProc) startTime() uint64     { return a.st }
func (a *adoptedProc) adopted() bool         { return true }
func (a *adoptedProc) done() <-chan struct{} { return a.ch }
func (a *adoptedProc) exit() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exitDesc
}

func (a *adoptedProc) term() error {
	if !a.alive() {
		return nil
	}
	return a.g.term()
}

func (a *adoptedProc) kill() error {
	if !a.alive() {
		return nil
	}
	return a.g.kill()
}

func (a *adoptedProc) release() {
	a.quitOnce.Do(func() { close(a.quit) })
	a.g.release()
}
