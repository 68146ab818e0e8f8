// Command testagent is a test program standing in for sutra-agent in the
// agent/upgrade tests: it uses the real upgrade and fetch packages the way the
// agent's run loop does, against a test master. Its behaviour is chosen at
// link time:
//
//	-X main.mode=ok        register, commit, poll the desired version
//	-X main.mode=broken    answer --version, but exit 1 at once when run
//	-X main.mode=nocommit  start, never reach the master (never commits)
//
// "testagent upgrade-check --data-dir D" runs the pre-start check. With
// "--crash-at STEP" the agent SIGKILLs itself the first time it reaches that
// step of an update (Options.StepHook), leaving the file D.crashed behind:
// the first half of a simulated power cut.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/upgrade"
	"github.com/sutragrid/sutra/internal/version"
)

var mode = "ok"

// exitRestart is the exit code after ErrRestartRequired.
const exitRestart = 3

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--version" {
		fmt.Println(version.Version)
		return
	}
	if len(args) > 0 && args[0] == upgrade.GuardCommand {
		os.Exit(upgrade.GuardMain(ctx, args[1:], upgrade.GuardOptions{Poll: 100 * time.Millisecond}, os.Stderr))
	}
	if len(args) > 0 && args[0] == upgrade.CheckCommand {
		os.Exit(upgrade.CheckMain(ctx, args[1:], upgrade.CheckOptions{}, os.Stderr))
	}
	if mode == "broken" {
		fmt.Fprintln(os.Stderr, "testagent", version.Version, ": broken build, exiting at once")
		os.Exit(1)
	}
	os.Exit(run(ctx, args))
}

func run(ctx context.Context, args []string) int {
	fl := flag.NewFlagSet("testagent", flag.ContinueOnError)
	dataDir := fl.String("data-dir", "", "")
	cacheDir := fl.String("cache-dir", "", "")
	master := fl.String("master", "", "")
	window := fl.Duration("window", 20*time.Second, "")
	grace := fl.Duration("guard-grace", time.Second, "")
	poll := fl.Duration("poll", 200*time.Millisecond, "")
	crashAt := fl.String("crash-at", "", "SIGKILL self at this update step, once")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("version", version.Version, "pid", os.Getpid())
	f, err := fetch.New(fetch.Options{BaseURL: *master, CacheDir: *cacheDir, Artifact: "sutra-agent", Logger: log,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Attempts: 2, Retries: 1})
	if err != nil {
		log.Error("fetch", "err", err)
		return 1
	}
	step := func(s string) {
		if s != *crashAt {
			return
		}
		marker := filepath.Clean(*dataDir) + ".crashed"
		if _, err := os.Stat(marker); err == nil {
			return
		}
		if err := os.WriteFile(marker, []byte(s+"\n"), 0o644); err != nil {
			log.Error("crash marker", "err", err)
			return
		}
		log.Warn("simulated crash: SIGKILL", "step", s)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	restart := make(chan struct{}, 1)
	u, err := upgrade.Start(ctx, upgrade.StartOptions{
		Options: upgrade.Options{DataDir: *dataDir, Fetcher: f, Window: *window, GuardGrace: *grace, Logger: log, StepHook: step,
			LogTail: func(n int) []string { return []string{"testagent " + version.Version + " log line"} }},
		Restart:        func(error) { restart <- struct{}{} },
		CommitRetryMin: 20 * time.Millisecond,
	})
	if err != nil {
		log.Error("upgrade", "err", err)
		if errors.Is(err, upgrade.ErrRestartRequired) {
			return exitRestart
		}
		return 1
	}
	if mode == "nocommit" {
		log.Info("cannot reach the master (test mode nocommit)")
		select {
		case <-ctx.Done():
			return 0
		case <-restart:
			return exitRestart
		}
	}
	committed := false
	t := time.NewTicker(*poll)
	defer t.Stop()
	for {
		if !committed && get(ctx, *master+"/register?version="+url.QueryEscape(version.Version)) != "" {
			committed = true
			u.Committed()
		}
		if want := get(ctx, *master+"/desired?version="+url.QueryEscape(version.Version)); want != "" {
			err := u.Desired(ctx, want)
			if errors.Is(err, upgrade.ErrRestartRequired) {
				return exitRestart
			}
			if err != nil {
				log.Error("apply", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return 0
		case <-restart:
			return exitRestart
		case <-t.C:
		}
	}
}

func get(ctx context.Context, u string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}
