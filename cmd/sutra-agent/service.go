package main

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime"

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
		AgentDataDir: serviceDataDir,
	})
	if code != 0 {
		os.Exit(code)
	}
	return nil
}

// serviceDataDir is the agent_data_dir the installed service will use with
// the config at path, where `service install --join-token` leaves the token.
// On Linux the systemd unit runs without HOME or the installer's
// environment, so a config without agent_data_dir resolves to
// /var/lib/sutra/agent there, whatever sudo's HOME is; elsewhere the
// installer's own resolution is the service's.
func serviceDataDir(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var env config.Env
	if runtime.GOOS == "linux" {
		noDir := func() (string, error) { return "", errors.New("no HOME under systemd") }
		env = config.Env{
			Getenv:       func(string) string { return "" },
			UserDataDir:  noDir,
			UserCacheDir: noDir,
		}
	}
	cfg, err := config.Parse(path, data, env)
	if err != nil {
		return "", err
	}
	return cfg.Agent.AgentDataDir, nil
}
