// Command storage-server is the reference storage node the grid distributes:
// an HTTP key-value server (PUT/GET/DELETE /kv/{key}, GET /healthz,
// GET /version) with its data in a bbolt database under --data-dir.
//
// Configuration: flags --port --data-dir --node-id --bind --request-timeout,
// or the environment STORAGE_PORT, STORAGE_PATH, NODE_ID, STORAGE_BIND,
// STORAGE_REQUEST_TIMEOUT; flags win. A request (body included) not received
// within the request timeout (default 30s) is answered 408 and its
// connection closed; idle keep-alive connections close after 2 minutes. --version
// prints the version stamped at build time. SIGTERM or SIGINT stop it
// gracefully (in-flight requests finish, the database closes, exit 0).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sutragrid/sutra/internal/storagenode"
	"github.com/sutragrid/sutra/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, storagenode.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "storage-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := storagenode.ParseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, version.Version)
		return nil
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil)).With("node", cfg.NodeID)
	if cfg.CrashAfter > 0 {
		time.AfterFunc(cfg.CrashAfter, func() {
			logger.Error("crashing on purpose", "env", storagenode.EnvCrashAfter, "after", cfg.CrashAfter)
			os.Exit(3)
		})
	}
	return storagenode.Run(ctx, cfg.Addr(), storagenode.Options{
		DataDir:    cfg.DataDir,
		NodeID:     cfg.NodeID,
		Version:    version.Version,
		Logger:     logger,
		FailHealth: cfg.FailHealth,

		RequestTimeout: cfg.RequestTimeout,
	}, nil)
}
