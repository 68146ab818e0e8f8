package main

import (
	"context"
	"errors"
	"io"
)

// runService manages the agent as an OS service (install, uninstall, start,
// stop, restart, status). (The lead replaces this file.)
func runService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	_, _, _, _ = ctx, args, stdout, stderr
	return errors.New("service: not implemented yet")
}
