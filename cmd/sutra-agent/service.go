package main

import (
	"context"
	"io"
	"os"

	"github.com/sutragrid/sutra/agent/config"
	agentsvc "github.com/sutragrid/sutra/agent/service"
)

// runService manages the agent as an OS service (install, uninstall, start,
// stop, restart, status) and exits with the command's scriptable code.
func runService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	code := agentsvc.Command(ctx, args, agentsvc.Options{
		Stdout: stdout,
		Stderr: stderr,
		CheckConfig: func(path string) error {
			_, err := config.Load(path)
			return err
		},
	})
	if code != 0 {
		os.Exit(code)
	}
	return nil
}
