package main

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/config"
	agentsvc "github.com/sutragrid/sutra/agent/service"
)

// errRestart makes main exit with status 3 after a self-update, so that the
// service manager (Restart=always) starts the new binary.
var errRestart = agent.ErrRestartRequired

// runAgent runs the agent until ctx ends: registration, heartbeats, fetching
// storage-server and supervising nodes. Under a service manager nodes are
// left running on exit by default (the next agent re-adopts them).
func runAgent(ctx context.Context, cfg *config.Config, logger *slog.Logger, asService bool, bar io.Writer) error {
	opts := agent.Options{
		Config:          cfg,
		Logger:          logger,
		StopNodesOnExit: cfg.Storage.StopNodesOnExitOr(!asService),
		ProgressBar:     bar,
	}
	up, err := newUpgrader(ctx, cfg, logger)
	if err != nil {
		if errors.Is(err, agent.ErrRestartRequired) {
			return err
		}
		logger.Error("self-update unavailable", "err", err)
	} else if up != nil {
		opts.Upgrader = up
	}
	run := func(ctx context.Context) error { return agent.Run(ctx, opts) }
	if asService {
		return agentsvc.RunAsService(ctx, run)
	}
	return run(ctx)
}
