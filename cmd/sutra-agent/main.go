// Command sutra-agent is the program an operator drops on a node machine with
// nothing but a config file: it registers with the grid master, fetches and
// verifies the storage-server binary for its platform, and runs the storage
// nodes the master asks for.
//
//	sutra-agent --version | version           print the version
//	sutra-agent fetch [--config F] [--version V] [--offline]
//	                                          fetch, verify and cache storage-server once; print its path
//	                                          (--offline: use the verified cache, never the master)
//	sutra-agent run [--config F]              run the agent until SIGINT/SIGTERM
//	sutra-agent service ...                   manage the agent as an OS service
//	sutra-agent diagnose [--bundle F]         what is wrong on this node (exit 1 lists problems)
//
// --config defaults to agent-config.toml in the working directory; when that
// default file does not exist, built-in defaults and the SUTRA_* environment
// variables are used (containers). A --config given explicitly must exist.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/sutragrid/sutra/agent/agentlog"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/version"
)

const defaultConfig = "agent-config.toml"

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")

const usage = `usage:
  sutra-agent --version | version
  sutra-agent fetch [--config FILE] [--version V] [--offline]
                                                  fetch, verify and cache storage-server; print its path
                                                  (--offline: the newest verified cached one, no master)
  sutra-agent run [--config FILE] [--service] [--join-token TOKEN]
                                                  run the agent until SIGINT/SIGTERM; enrolls with TOKEN first if it has no certificate
  sutra-agent service install|uninstall|start|stop|restart|status [--config FILE]
  sutra-agent diagnose [--config FILE] [--bundle FILE] [-o text|json] [--timeout 3s]
                                                  check config (secrets redacted), master ports, certificate, cache,
                                                  nodes and logs, self-update, service; exit 0 all OK, 1 problems listed
                                                  (--bundle FILE: also write it with the log tails as a .tar.gz, 0600)
`

func main() {
	// The agent allocates little and lives long: a tighter GC target keeps
	// its footprint small on node machines (GOGC in the environment wins).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		if errors.Is(err, errRestart) {
			fmt.Fprintln(os.Stderr, "sutra-agent: exiting so that the service manager starts the updated agent")
			os.Exit(3)
		}
		fmt.Fprintln(os.Stderr, "sutra-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "--version", "-version", "-v", "version":
		fmt.Fprintln(stdout, version.Version)
		return nil
	case "fetch":
		return cmdFetch(ctx, args[1:], stdout, stderr)
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "service":
		return runService(ctx, args[1:], stdout, stderr)
	case "upgrade-guard":
		return runUpgradeGuard(ctx, args[1:], stderr)
	case "upgrade-check":
		return runUpgradeCheck(ctx, args[1:], stderr)
	case "diagnose":
		return cmdDiagnose(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", defaultConfig, "agent config file")
	joinToken := fl.String("join-token", "", "join token to enroll with when the agent has no certificate yet (else SUTRA_JOIN_TOKEN, agent.join_token, or {agent_data_dir}/join-token left by `service install --join-token`, deleted after enrollment; make one with `sutra tokens create` on the master)")
	asService := fl.Bool("service", false, "run under the OS service manager (set by `sutra-agent service install`; nodes are left running on exit unless storage.stop_nodes_on_exit = true)")
	if err := fl.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fl.Arg(0))
	}
	cfg, logger, err := setup(*cfgPath, flagSet(fl, "config"), stderr)
	if err != nil {
		return err
	}
	if *joinToken != "" {
		// Parse errors never quote the secret.
		if _, err := jointoken.Parse(*joinToken); err != nil {
			return fmt.Errorf("--join-token: %w (copy the whole token 'sutra tokens create' printed)", err)
		}
		cfg.Agent.JoinToken = *joinToken
	}
	// The agent's own log also goes to {agent_data_dir}/logs/agent.log, whose
	// last lines a self-update rollback reports to the master.
	if lf, err := agentlog.Open(agentlog.Path(cfg.Agent.AgentDataDir), 0); err != nil {
		logger.Warn("agent log file unavailable; logging to stderr only", "err", err)
	} else {
		defer lf.Close()
		logger = newLogger(cfg.Logging, io.MultiWriter(stderr, lf))
	}
	return runAgent(ctx, cfg, logger, *asService, progressWriter(stderr))
}

// setup loads the config (defaults + environment when the default file is
// absent) and builds the logger it asks for.
func setup(path string, explicit bool, stderr io.Writer) (*config.Config, *slog.Logger, error) {
	cfg, err := config.Load(path)
	usedDefaults := false
	if err != nil && !explicit && errors.Is(err, fs.ErrNotExist) {
		cfg, err = config.Defaults()
		usedDefaults = true
	}
	if err != nil {
		return nil, nil, err
	}
	logger := newLogger(cfg.Logging, stderr)
	if usedDefaults {
		logger.Info("no config file; using built-in defaults and SUTRA_* environment variables",
			"looked_for", path, "master", cfg.Agent.MasterHost, "agent_id", cfg.Agent.AgentID)
	}
	return cfg, logger, nil
}

func newLogger(l config.Logging, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.SlogLevel()}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func flagSet(fl *flag.FlagSet, name string) bool {
	set := false
	fl.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// progressWriter returns w when it is a terminal (a progress bar is drawn
// there), else nil.
func progressWriter(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return w
}
