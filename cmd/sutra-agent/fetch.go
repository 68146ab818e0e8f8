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

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/ratchet"
	"github.com/sutragrid/sutra/agent/state"
)

func cmdFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("fetch", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", defaultConfig, "agent config file")
	ver := fl.String("version", fetch.Latest, `storage-server version to fetch ("latest" or x.y.z)`)
	offline := fl.Bool("offline", false, "do not ask the master: print the newest verified cached storage-server for this platform "+
		"(or --version's), re-hashed against the checksum recorded when it was verified; never one that failed on this agent")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the flag package printed the flags
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fl.Arg(0))
	}
	cfg, logger, err := setup(*cfgPath, flagSet(fl, "config"), stderr)
	if err != nil {
		return err
	}
	path, err := fetchOnce(ctx, cfg, fetchRequest{Version: *ver, Offline: *offline}, logger, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, path)
	return nil
}

// fetchRequest is what `sutra-agent fetch` was asked for.
type fetchRequest struct {
	Version string // "latest" or x.y.z
	Offline bool   // use the verified cache only
}

// fetchOnce does the design document's steps 2-7 once: resolve, download,
// verify, cache, prune. With storage.binary_path set it only checks that
// file. Offline it returns a verified cached binary without the master.
// While the master is unreachable it tells on stderr, after the first failed
// request, which verified cached version --offline would use.
func fetchOnce(ctx context.Context, cfg *config.Config, req fetchRequest, logger *slog.Logger, stderr io.Writer) (string, error) {
	if cfg.Storage.BinaryPath != "" {
		e, err := fetch.Local(ctx, cfg.Storage.BinaryPath)
		if err != nil {
			return "", err
		}
		logger.Info("storage.binary_path is set; using it as is (no download)", "path", e.Path, "sha256", e.Checksum)
		return e.Path, nil
	}
	failed, err := failedBinaries(cfg.Agent.AgentDataDir)
	if err != nil {
		if req.Offline {
			return "", fmt.Errorf("offline: cannot tell which cached binaries failed on this agent: %w", err)
		}
		logger.Warn("record of failed storage-server versions unreadable", "err", err)
	}
	opts := fetch.Options{
		BaseURL:     cfg.Storage.MasterBinaryURL,
		CacheDir:    cfg.Agent.CacheDir,
		TLSDir:      filepath.Join(cfg.Agent.AgentDataDir, "tls"),
		Logger:      logger,
		ProgressBar: progressWriter(stderr),
		Failed:      failed,
		// [agent] download_rate_limit (issue 14).
		DownloadRateLimit: cfg.Agent.DownloadRate(),
	}
	var require bool
	if opts.Keys, _, require, err = cfg.Security.EffectiveKeyring(cfg.Agent.AgentDataDir); err != nil {
		return "", err
	}
	opts.AllowUnsigned = !require
	opts.Ratchet = ratchet.Open(cfg.Agent.AgentDataDir)
	if !req.Offline {
		opts.OnUnreachable = func(cached *cache.Entry, err error) {
			if cached != nil {
				fmt.Fprintf(stderr, "sutra-agent: the master at %s is unreachable (%v); still retrying.\n"+
					"sutra-agent: storage-server %s is cached and verified at %s: run `sutra-agent fetch --offline` to use it now.\n",
					cfg.Storage.MasterBinaryURL, err, cached.Version, cached.Path)
				return
			}
			fmt.Fprintf(stderr, "sutra-agent: the master at %s is unreachable (%v); still retrying. No verified storage-server is cached for this platform.\n",
				cfg.Storage.MasterBinaryURL, err)
		}
	}
	f, err := fetch.New(opts)
	if err != nil {
		return "", err
	}
	if req.Offline {
		e, err := f.Offline(ctx, req.Version)
		if err != nil {
			return "", err
		}
		logger.Info("offline: using the verified cached binary (the master was not asked)", "version", e.Version, "path", e.Path, "sha256", e.Checksum)
		return e.Path, nil
	}
	e, err := f.Ensure(ctx, req.Version)
	if err != nil {
		return "", err
	}
	if removed, err := f.Prune(e.Version); err != nil {
		logger.Warn("prune cache", "err", err)
	} else if len(removed) > 0 {
		logger.Info("pruned old versions", "removed", removed)
	}
	return e.Path, nil
}

// failedBinaries reads the agent's record of storage-server binaries that
// failed a node upgrade (agent/state), without creating the data dir.
func failedBinaries(dataDir string) (func(cache.Entry) bool, error) {
	if dataDir == "" {
		return nil, nil
	}
	if _, err := os.Stat(dataDir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	st, err := state.Open(dataDir)
	if err != nil {
		return nil, err
	}
	failures, err := st.LoadFailures()
	if err != nil {
		return nil, err
	}
	return func(e cache.Entry) bool {
		_, bad := failures[e.Checksum]
		return bad
	}, nil
}
