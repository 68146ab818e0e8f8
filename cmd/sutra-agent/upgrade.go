package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/config"
)

// newUpgrader wires the agent's self-update (nil when unavailable).
func newUpgrader(ctx context.Context, cfg *config.Config, logger *slog.Logger) (agent.Upgrader, error) {
	_, _, _ = ctx, cfg, logger
	return nil, nil
}

// runUpgradeGuard is the detached watchdog a self-updating agent leaves behind.
func runUpgradeGuard(ctx context.Context, args []string, stderr io.Writer) error {
	_, _ = ctx, stderr
	return fmt.Errorf("%w: upgrade-guard %v", errUsage, args)
}
