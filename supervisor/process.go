package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Identity names one process beyond its pid, which the system reuses: the
// start time (ProcessStartTime) tells processes of one boot apart, the boot
// id (BootID) tells boots apart where start times count from boot (Linux),
// and the executable guards against everything else.
type Identity struct {
	PID       int
	StartTime uint64
	// BootID is the boot the process was started in ("" where the
	// platform has none, or in a record written before boot ids were kept).
	BootID string
	// Exe is the executable the process runs ("" = Spec.Path).
	Exe string
}

// Marked is a live process found by FindMarked.
type Marked struct {
	Identity
	// Args is the command line (argv, argv[0] included).
	Args []string
	// Env is the environment the process was started with.
	Env map[string]string
}

// Identify returns the identity of the live process pid.
func Identify(pid int) (Identity, error) {
	st, err := ProcessStartTime(pid)
	if err != nil {
		return Identity{}, err
	}
	exe, err := ProcessExe(pid)
	if err != nil {
		return Identity{}, err
	}
	boot, err := BootID()
	if err != nil && !errors.Is(err, ErrUnsupported) {
		return Identity{}, err
	}
	return Identity{PID: pid, StartTime: st, BootID: boot, Exe: exe}, nil
}

// checkIdentity verifies that the live process want.PID is the one want
// describes, running exe with args (argv[1:], checked only when there is no
// boot id to compare).
func checkIdentity(want Identity, exe string, args []string) error {
	pid := want.PID
	cur, err := ProcessStartTime(pid)
	if err != nil {
		return fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	if cur != want.StartTime {
		return fmt.Errorf("adopt pid %d: start time %d, recorded %d: %w", pid, cur, want.StartTime, ErrIdentityMismatch)
	}
	// An unreadable boot id counts as unknown: the checks below that do
	// not need it decide.
	boot, _ := BootID()
	switch {
	case want.BootID != "" && want.BootID == boot:
		// Same boot.
	case want.BootID != "" && boot != "":
		return fmt.Errorf("adopt pid %d: recorded in boot %s, this is boot %s: %w", pid, want.BootID, boot, ErrIdentityMismatch)
	case startTimeAbsolute:
		// No boot to compare (an older record, or a platform without boot
		// ids): a wall-clock start time cannot repeat after a reboot.
	default:
		// No boot to compare and a start time counted from boot, which can
		// match a process of a later boot: the command line must be exactly
		// the node's too.
		got, err := ProcessArgs(pid)
		if err != nil {
			return fmt.Errorf("adopt pid %d (boot unknown): %w", pid, err)
		}
		if len(got) == 0 || !slices.Equal(got[1:], args) {
			return fmt.Errorf("adopt pid %d: boot unknown and the command line %q is not the node's: %w", pid, got, ErrIdentityMismatch)
		}
	}
	gotExe, err := ProcessExe(pid)
	if err != nil {
		return fmt.Errorf("adopt pid %d: %w", pid, err)
	}
	if !sameExe(gotExe, exe) {
		return fmt.Errorf("adopt pid %d: runs %s, recorded %s: %w", pid, gotExe, exe, ErrIdentityMismatch)
	}
	// The executable was read from the same process: re-check the start time.
	if again, err := ProcessStartTime(pid); err != nil || again != want.StartTime {
		return fmt.Errorf("adopt pid %d: exited while being identified: %w", pid, ErrIdentityMismatch)
	}
	return nil
}

// sameExe reports whether the executable a process runs (as the system
// reports it) is the file want names, symlinks resolved. The " (deleted)"
// Linux appends when the file was removed or replaced since the start is
// ignored: the path is what identifies the node's binary.
func sameExe(got, want string) bool {
	got = strings.TrimSuffix(got, " (deleted)")
	if got == "" || want == "" {
		return false
	}
	if !filepath.IsAbs(got) {
		// macOS's ps may name a program by argv[0] alone; the start time
		// (wall clock there) carries the identity.
		return filepath.Base(got) == filepath.Base(want)
	}
	forms := func(p string) []string {
		out := []string{filepath.Clean(p)}
		if abs, err := filepath.Abs(p); err == nil {
			out = append(out, abs)
			if r, err := filepath.EvalSymlinks(abs); err == nil {
				out = append(out, r)
			}
		}
		return out
	}
	for _, g := range forms(got) {
		for _, w := range forms(want) {
			if g == w || (runtime.GOOS == "windows" && strings.EqualFold(g, w)) {
				return true
			}
		}
	}
	return false
}

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
