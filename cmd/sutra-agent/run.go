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

// errRestart makes main exit with status 3 after a self-update or a
// rollback, so that the service manager (Restart=always) starts the binary
// now in place.
var errRestart = agent.ErrRestartRequired

// runAgent runs the agent until ctx ends: registration, heartbeats, fetching
// storage-server and supervising nodes. Under a service manager nodes are
// left running on exit by default (the next agent re-adopts them).
func runAgent(ctx context.Context, cfg *config.Config, logger *slog.Logger, asService bool, bar io.Writer) error {
	run := func(ctx context.Context) error {
		ctx, restart := context.WithCancelCause(ctx)
		defer restart(nil)
		opts := agent.Options{
			Config:          cfg,
			Logger:          logger,
			StopNodesOnExit: cfg.Storage.StopNodesOnExitOr(!asService),
			ProgressBar:     bar,
		}
		up, err := newUpgrader(ctx, cfg, logger, restart)
		switch {
		case errors.Is(err, agent.ErrRestartRequired):
			return err
		case err != nil:
			logger.Error("agent self-update unavailable", "err", err)
		default:
			opts.Upgrader = up
		}
		err = agent.Run(ctx, opts)
		if cause := context.Cause(ctx); errors.Is(cause, agent.ErrRestartRequired) {
			return cause
		}
		return err
	}
	if asService {
		return agentsvc.RunAsService(ctx, run)
	}
	return run(ctx)
}
