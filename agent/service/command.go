package agentsvc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kardianos/service"
)

// Exit codes of Command. The status codes follow LSB init scripts and
// "systemctl status".
const (
	ExitOK           = 0 // done; for status: running
	ExitError        = 1 // failed; for status: state unknown (reason on stderr)
	ExitUsage        = 2 // bad command line
	ExitStopped      = 3 // status: installed, not running
	ExitNotInstalled = 4 // status: not installed
)

// DefaultConfig is the config file used when --config is not given, resolved
// against the working directory (as "sutra-agent run" does).
const DefaultConfig = "agent-config.toml"

// Usage is the help text of "sutra-agent service".
const Usage = `usage: sutra-agent service install|uninstall|start|stop|restart|status [--config FILE]

  install     register the agent with the OS service manager (systemd, launchd,
              Windows service manager) to run "sutra-agent run --config FILE
              --service" at boot, restarting it 2 s after any exit; FILE
              (default ./agent-config.toml) must exist and is stored as an
              absolute path. Does not start it: run "service start".
  uninstall   stop the agent and remove the service definition; storage nodes
              it started keep running
  start       start the agent service
  stop        stop the agent service (its storage nodes keep running)
  restart     restart it (its storage nodes keep running and are re-adopted)
  status      print one word and exit with its code:
                running         0
                stopped         3   installed, not running
                not-installed   4
                unknown         1   (the reason on stderr)

All but status need root (Administrator on Windows).
`

// Options configure Command.
type Options struct {
	// Stdout and Stderr receive the result and errors. Default: discard.
	Stdout, Stderr io.Writer
	// Executable is the agent binary the service runs. Default: this
	// program (os.Executable, symlinks resolved).
	Executable string
	// CheckConfig, when set, validates the config file before install
	// (e.g. by loading it), so a broken file fails now rather than in a
	// restart loop.
	CheckConfig func(path string) error

	// Seams for tests; nil means the real OS.
	newManager func(*service.Config) (manager, error)
	privileged func() bool
	goos       string
}

// manager is the part of a kardianos service that Command uses.
type manager interface {
	Install() error
	Uninstall() error
	Start() error
	Stop() error
	Restart() error
	Status() (service.Status, error)
	Platform() string
}

// State is the one word "service status" prints.
type State string

// States of the agent service.
const (
	StateRunning      State = "running"
	StateStopped      State = "stopped"
	StateNotInstalled State = "not-installed"
	StateUnknown      State = "unknown"
)

// ExitCode returns the exit code "service status" ends with for s.
func (s State) ExitCode() int {
	switch s {
	case StateRunning:
		return ExitOK
	case StateStopped:
		return ExitStopped
	case StateNotInstalled:
		return ExitNotInstalled
	}
	return ExitError
}

// ErrPermission is returned (wrapped) when an action needs root or
// Administrator.
var ErrPermission = errors.New("permission denied")

// Command runs "sutra-agent service ARGS" and returns the process exit code.
func Command(ctx context.Context, args []string, opts Options) int {
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.goos == "" {
		opts.goos = runtime.GOOS
	}
	if opts.newManager == nil {
		opts.newManager = newKardianos
	}
	if opts.privileged == nil {
		opts.privileged = privileged
	}
	if len(args) == 0 {
		fmt.Fprint(opts.Stderr, Usage)
		return ExitUsage
	}
	action := args[0]
	switch action {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(opts.Stdout, Usage)
		return ExitOK
	case "install", "uninstall", "start", "stop", "restart", "status":
	default:
		fmt.Fprintf(opts.Stderr, "sutra-agent service: unknown action %q\n%s", action, Usage)
		return ExitUsage
	}
	fl := flag.NewFlagSet("sutra-agent service "+action, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	cfgPath := fl.String("config", DefaultConfig, "agent config file")
	if err := fl.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(opts.Stdout, Usage)
			return ExitOK
		}
		fmt.Fprintf(opts.Stderr, "sutra-agent service %s: %v\n%s", action, err, Usage)
		return ExitUsage
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(opts.Stderr, "sutra-agent service %s: unexpected argument %q\n%s", action, fl.Arg(0), Usage)
		return ExitUsage
	}

	c := &commander{opts: opts, action: action}
	if action == "status" {
		st, err := c.status(*cfgPath)
		fmt.Fprintln(opts.Stdout, st)
		if err != nil {
			fmt.Fprintf(opts.Stderr, "sutra-agent: service status: %v\n", err)
		}
		return st.ExitCode()
	}
	msg, err := c.run(ctx, *cfgPath)
	if err != nil {
		fmt.Fprintf(opts.Stderr, "sutra-agent: %v\n", c.explain(err))
		return ExitError
	}
	fmt.Fprintln(opts.Stdout, msg)
	return ExitOK
}

type commander struct {
	opts   Options
	action string
}

// explain turns a permission failure into the one line that says what to do.
func (c *commander) explain(err error) error {
	if !isPermission(err) {
		return fmt.Errorf("service %s: %w", c.action, err)
	}
	if c.opts.goos == "windows" {
		return fmt.Errorf("%w: rerun as Administrator (sutra-agent service %s in an elevated prompt)", ErrPermission, c.action)
	}
	return fmt.Errorf("%w: rerun as root (sudo sutra-agent service %s)", ErrPermission, c.action)
}

func isPermission(err error) bool {
	if errors.Is(err, ErrPermission) || errors.Is(err, fs.ErrPermission) {
		return true
	}
	// kardianos reports a failed systemctl/launchctl by its output.
	s := err.Error()
	for _, m := range []string{"Access denied", "Interactive authentication required", "Operation not permitted", "Permission denied"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// definition builds the service definition from the config path.
func (c *commander) definition(cfgPath string) (Definition, error) {
	exe := c.opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return Definition{}, fmt.Errorf("locate sutra-agent binary: %w", err)
		}
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	exe, err := filepath.Abs(exe)
	if err != nil {
		return Definition{}, fmt.Errorf("locate sutra-agent binary: %w", err)
	}
	cfg, err := filepath.Abs(cfgPath)
	if err != nil {
		return Definition{}, fmt.Errorf("config %s: %w", cfgPath, err)
	}
	return Definition{Executable: exe, ConfigPath: cfg}, nil
}

func (c *commander) manager(d Definition) (manager, error) {
	cfg, err := kardianosConfig(c.opts.goos, d)
	if err != nil {
		return nil, err
	}
	m, err := c.opts.newManager(cfg)
	if err != nil {
		return nil, err
	}
	if c.opts.goos == "linux" && m.Platform() != "linux-systemd" {
		return nil, fmt.Errorf("this machine's init system is %s; only systemd is supported on Linux: run \"sutra-agent run --config FILE\" under your init system instead", m.Platform())
	}
	return m, nil
}

func (c *commander) status(cfgPath string) (State, error) {
	d, err := c.definition(cfgPath)
	if err != nil {
		return StateUnknown, err
	}
	m, err := c.manager(d)
	if err != nil {
		return StateUnknown, err
	}
	return stateOf(m)
}

func stateOf(m manager) (State, error) {
	st, err := m.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return StateNotInstalled, nil
	case err != nil && strings.Contains(err.Error(), "failed state"):
		// systemd: installed, crashed or gave up restarting.
		return StateStopped, fmt.Errorf("the unit failed (see journalctl -u %s); \"sutra-agent service start\" tries again", Name)
	case err != nil:
		return StateUnknown, err
	case st == service.StatusRunning:
		return StateRunning, nil
	case st == service.StatusStopped:
		return StateStopped, nil
	}
	return StateUnknown, errors.New("the service manager reports an unknown state")
}

// run performs a mutating action and returns the line to print.
func (c *commander) run(ctx context.Context, cfgPath string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if !c.opts.privileged() {
		return "", ErrPermission
	}
	d, err := c.definition(cfgPath)
	if err != nil {
		return "", err
	}
	if c.action == "install" {
		if err := c.checkConfig(d.ConfigPath); err != nil {
			return "", err
		}
	}
	m, err := c.manager(d)
	if err != nil {
		return "", err
	}
	st, err := stateOf(m)
	if st == StateUnknown {
		return "", fmt.Errorf("query the service manager: %w", err)
	}
	switch c.action {
	case "install":
		if st != StateNotInstalled {
			return "", fmt.Errorf("%s is already installed (%s): run \"sutra-agent service uninstall\" first", Name, st)
		}
		if err := m.Install(); err != nil {
			return "", err
		}
		if err := afterInstall(); err != nil {
			return "", err
		}
		return fmt.Sprintf("installed %s: %s\nstart it with: sutra-agent service start", Name,
			windowsCommandLine(d.Executable, d.Arguments())), nil
	case "uninstall":
		if st == StateNotInstalled {
			return Name + " is not installed", nil
		}
		if st == StateRunning {
			if err := m.Stop(); err != nil {
				return "", fmt.Errorf("stop before uninstall: %w", err)
			}
		}
		if err := m.Uninstall(); err != nil {
			return "", err
		}
		return "uninstalled " + Name, nil
	}
	if st == StateNotInstalled {
		return "", fmt.Errorf("%s is not installed: run \"sutra-agent service install --config FILE\" first", Name)
	}
	switch c.action {
	case "start":
		if st == StateRunning {
			return Name + " is already running", nil
		}
		err = m.Start()
	case "stop":
		if st == StateStopped {
			return Name + " is already stopped", nil
		}
		err = m.Stop()
	case "restart":
		if st == StateRunning {
			err = m.Restart()
		} else {
			err = m.Start()
		}
	}
	if err != nil {
		return "", err
	}
	return map[string]string{"start": "started ", "stop": "stopped ", "restart": "restarted "}[c.action] + Name, nil
}

func (c *commander) checkConfig(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("config %s does not exist: write one (see configs/agent-config.toml) or pass --config FILE", path)
	}
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("config %s is not a regular file", path)
	}
	if c.opts.CheckConfig != nil {
		if err := c.opts.CheckConfig(path); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	return nil
}

// newKardianos returns the real service manager for this OS. The program
// interface is unused for control actions.
func newKardianos(cfg *service.Config) (manager, error) {
	s, err := service.New(noProgram{}, cfg)
	if err != nil {
		return nil, fmt.Errorf("service manager: %w", err)
	}
	return s, nil
}

type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }
