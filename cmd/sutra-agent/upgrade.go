package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/agentlog"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/fetch"
	agentsvc "github.com/sutragrid/sutra/agent/service"
	"github.com/sutragrid/sutra/agent/upgrade"
)

// newUpgrader starts the agent's self-update (agent/upgrade.Start): it
// settles an update in progress, then watches the probation window and
// records the commit in the background. It returns an error wrapping
// agent.ErrRestartRequired when the agent must exit at once (rolled back).
func newUpgrader(ctx context.Context, cfg *config.Config, logger *slog.Logger, restart context.CancelCauseFunc) (*upgrade.Hooks, error) {
	af, err := fetch.New(fetch.Options{
		BaseURL:  cfg.Storage.MasterBinaryURL,
		CacheDir: cfg.Agent.CacheDir,
		Artifact: "sutra-agent",
		Logger:   logger,
	})
	if err != nil {
		return nil, err
	}
	return upgrade.Start(ctx, upgrade.StartOptions{
		Options: upgrade.Options{DataDir: cfg.Agent.AgentDataDir, Fetcher: af, Logger: logger, Window: cfg.Agent.UpgradeWindow(),
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
