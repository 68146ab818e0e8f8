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

	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/internal/jointoken"
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
       sutra-agent service install [--config FILE] [--join-token TOKEN | --join-token-file FILE]

  install     register the agent with the OS service manager (systemd, launchd,
              Windows service manager) to run "sutra-agent run --config FILE
              --service" at boot, restarting it 2 s after any exit; FILE
              (default ./agent-config.toml) must exist and is stored as an
              absolute path. Does not start it: run "service start".
              --join-token TOKEN (or --join-token-file FILE, which keeps the
              token out of ps and the shell history, or SUTRA_JOIN_TOKEN)
              stores a join token from "sutra tokens create" in
              {agent_data_dir}/join-token (0600), never in the service
              definition or the config; the agent enrolls with it at its
              first start and deletes it. Zero-touch on a fresh node:
                sudo sutra-agent service install --join-token-file tok && sudo sutra-agent service start
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
	// AgentDataDir returns the agent_data_dir the service will use with the
	// config at path; install --join-token stores the token there. Nil:
	// install refuses a join token.
	AgentDataDir func(path string) (string, error)
	// Getenv reads SUTRA_JOIN_TOKEN. Default os.Getenv.
	Getenv func(string) string

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
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
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
	joinToken := fl.String("join-token", "", "join token to store for the agent's first start (install)")
	joinTokenFile := fl.String("join-token-file", "", "file holding the join token (install)")
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

	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if (set["join-token"] || set["join-token-file"]) && action != "install" {
		fmt.Fprintf(opts.Stderr, "sutra-agent service %s: --join-token and --join-token-file are for install only\n%s", action, Usage)
		return ExitUsage
	}
	if set["join-token"] && set["join-token-file"] {
		fmt.Fprintf(opts.Stderr, "sutra-agent service install: give --join-token or --join-token-file, not both\n%s", Usage)
		return ExitUsage
	}
	c := &commander{opts: opts, action: action}
	if action == "install" {
		tok, err := joinTokenArg(*joinToken, *joinTokenFile, opts.Getenv)
		if err != nil {
			fmt.Fprintf(opts.Stderr, "sutra-agent service install: %v\n", err)
			return ExitUsage
		}
		c.joinToken = tok
	}
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
	opts      Options
	action    string
	joinToken string // install: the token to store ("" for none); a secret
}

// maxTokenFile bounds what --join-token-file reads.
const maxTokenFile = 4096

// joinTokenArg is the join token install stores: --join-token, else the
// contents of --join-token-file, else SUTRA_JOIN_TOKEN; "" for none. Its
// syntax is checked (internal/jointoken); errors never quote it.
func joinTokenArg(flagTok, file string, getenv func(string) string) (string, error) {
	tok, from := flagTok, "--join-token"
	switch {
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--join-token-file: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
		if err != nil {
			return "", fmt.Errorf("--join-token-file: %w", err)
		}
		if len(b) > maxTokenFile {
			return "", fmt.Errorf("--join-token-file %s is larger than %d bytes: it holds no join token", file, maxTokenFile)
		}
		tok, from = strings.TrimSpace(string(b)), "--join-token-file "+file
	case tok == "":
		tok, from = getenv(EnvJoinToken), EnvJoinToken
	}
	if tok == "" {
		return "", nil
	}
	if _, err := jointoken.Parse(tok); err != nil {
		return "", fmt.Errorf("%s: %w (copy the whole token 'sutra tokens create' printed)", from, err)
	}
	return tok, nil
}

// EnvJoinToken is the environment variable install reads a join token from
// when no flag gives one (the agent's own SUTRA_JOIN_TOKEN).
const EnvJoinToken = "SUTRA_JOIN_TOKEN"

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
		stored, err := c.storeJoinToken(d.ConfigPath)
		if err != nil {
			return "", err
		}
		if err := m.Install(); err != nil {
			removeToken(stored)
			return "", err
		}
		if err := afterInstall(); err != nil {
			return "", err
		}
		msg := fmt.Sprintf("installed %s: %s\n", Name, windowsCommandLine(d.Executable, d.Arguments()))
		if stored != "" {
			msg += fmt.Sprintf("join token stored in %s (0600): the agent enrolls with it at its first start, then deletes it\n", stored)
		}
		return msg + "start it with: sutra-agent service start", nil
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

// storeJoinToken writes the install's join token, if any, where the agent
// reads it at its next start (controlplane.WriteJoinTokenFile) and returns
// the file's path ("" for no token).
func (c *commander) storeJoinToken(cfgPath string) (string, error) {
	if c.joinToken == "" {
		return "", nil
	}
	if c.opts.AgentDataDir == nil {
		return "", errors.New("this build cannot store a join token (no agent_data_dir resolver)")
	}
	dir, err := c.opts.AgentDataDir(cfgPath)
	if err != nil {
		return "", fmt.Errorf("config %s: agent_data_dir: %w", cfgPath, err)
	}
	return controlplane.WriteJoinTokenFile(dir, c.joinToken)
}

// removeToken deletes a stored join token after a failed install.
func removeToken(path string) {
	if path != "" {
		_ = os.Remove(path)
	}
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
