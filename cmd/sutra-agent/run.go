package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/sutragrid/sutra/agent/config"
)

// runAgent runs the agent until ctx ends: registration, heartbeats, fetching
// storage-server and supervising nodes. (The lead replaces this file.)
func runAgent(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	_, _, _ = ctx, cfg, logger
	return errors.New("run: not implemented yet")
}
