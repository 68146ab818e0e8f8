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
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/agentlog"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/ratchet"
	agentsvc "github.com/sutragrid/sutra/agent/service"
	"github.com/sutragrid/sutra/agent/upgrade"
)

// newUpgrader starts the agent's self-update (agent/upgrade.Start): it
// settles an update in progress, then watches the probation window and
// records the commit in the background. It returns an error wrapping
// agent.ErrRestartRequired when the agent must exit at once (rolled back).
func newUpgrader(ctx context.Context, cfg *config.Config, logger *slog.Logger, restart context.CancelCauseFunc) (*upgrade.Hooks, error) {
	book := ratchet.Open(cfg.Agent.AgentDataDir)
	keys, keyTexts, require, err := cfg.Security.EffectiveKeyring(cfg.Agent.AgentDataDir)
	if err != nil {
		return nil, err
	}
	af, err := fetch.New(fetch.Options{
		BaseURL:       cfg.Storage.MasterBinaryURL,
		CacheDir:      cfg.Agent.CacheDir,
		TLSDir:        filepath.Join(cfg.Agent.AgentDataDir, "tls"),
		Artifact:      "sutra-agent",
		Logger:        logger,
		Keys:          keys,
		AllowUnsigned: !require,
		Ratchet:       book,
	})
	if err != nil {
		return nil, err
	}
	return upgrade.Start(ctx, upgrade.StartOptions{
		Options: upgrade.Options{DataDir: cfg.Agent.AgentDataDir, Fetcher: af, Logger: logger, Window: cfg.Agent.UpgradeWindow(),
			PublicKeys: keyTexts, Ratchet: book,
			LogTail: func(n int) []string { return agentlog.Tail(agentlog.Path(cfg.Agent.AgentDataDir), n) }},
		AutoUpdate: cfg.Agent.AutoUpdate,
		Restart:    restart,
		RestartErr: agent.ErrRestartRequired,
	})
}

// runUpgradeGuard is the detached watchdog a self-updating agent leaves
// behind: it restores the previous binary when the new one does not commit.
func runUpgradeGuard(ctx context.Context, args []string, stderr io.Writer) error {
	// A crash-looping release may have exhausted the service manager's
	// start limit by the time the guard restores the previous binary.
	opts := upgrade.GuardOptions{AfterRollback: agentsvc.StartAfterRollback}
	for i, a := range args {
		dir, ok := strings.CutPrefix(a, "--data-dir=")
		if !ok && (a == "--data-dir" || a == "-data-dir") && i+1 < len(args) {
			dir, ok = args[i+1], true
		}
		if ok {
			opts.LogTail = func(n int) []string { return agentlog.Tail(agentlog.Path(dir), n) }
		}
	}
	if code := upgrade.GuardMain(ctx, args, opts, stderr); code != 0 {
		return fmt.Errorf("upgrade-guard exited with status %d", code)
	}
	return nil
}

// runUpgradeCheck is the pre-start check the service manager runs from the
// previous agent binary (systemd "ExecStartPre=-…/sutra-agent.previous
// upgrade-check --config F"): it restores the previous binary when a new one
// on probation keeps failing or its probation expired (agent/upgrade.Check).
func runUpgradeCheck(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet(upgrade.CheckCommand, flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", defaultConfig, "agent config file")
	dataDir := fl.String("data-dir", "", "agent data dir (default: agent.agent_data_dir of the config)")
	if err := fl.Parse(args); err != nil || fl.NArg() > 0 {
		return fmt.Errorf("%w: %s [--config FILE] [--data-dir DIR]", errUsage, upgrade.CheckCommand)
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if *dataDir == "" {
		*dataDir = checkDataDir(*cfgPath, logger)
	}
	if *dataDir == "" {
		return errors.New("upgrade-check: no agent data dir (pass --data-dir)")
	}
	restored, err := upgrade.Check(ctx, upgrade.CheckOptions{DataDir: *dataDir, Logger: logger,
		LogTail: func(n int) []string { return agentlog.Tail(agentlog.Path(*dataDir), n) }})
	if err != nil {
		return fmt.Errorf("upgrade-check: %w", err)
	}
	if restored {
		logger.Warn("upgrade-check restored the previous agent binary; the service starts it")
	}
	return nil
}

// checkDataDir finds the agent data dir for the pre-start check. The check
// runs from the previous binary, whose strict config decoder may not know a
// key the new release added: when the config does not load, only
// agent.agent_data_dir is read from it.
func checkDataDir(path string, logger *slog.Logger) string {
	cfg, err := config.Load(path)
	if err == nil {
		return cfg.Agent.AgentDataDir
	}
	if errors.Is(err, fs.ErrNotExist) {
		if cfg, err := config.Defaults(); err == nil {
			return cfg.Agent.AgentDataDir
		}
		return ""
	}
	logger.Warn("upgrade-check: config does not load; reading agent.agent_data_dir alone", "config", path, "err", err)
	var partial struct {
		Agent struct {
			AgentDataDir string `toml:"agent_data_dir"`
		} `toml:"agent"`
	}
	if _, err := toml.DecodeFile(path, &partial); err == nil && partial.Agent.AgentDataDir != "" {
		dir := partial.Agent.AgentDataDir
		if rest, ok := strings.CutPrefix(dir, "~/"); ok {
			if home, err := os.UserHomeDir(); err == nil {
				return filepath.Join(home, rest)
			}
		}
		if !filepath.IsAbs(dir) {
			// Relative to the config file's folder, as config.Load has it.
			return filepath.Join(filepath.Dir(path), dir)
		}
		return dir
	}
	if cfg, err := config.Defaults(); err == nil {
		return cfg.Agent.AgentDataDir
	}
	return ""
}
