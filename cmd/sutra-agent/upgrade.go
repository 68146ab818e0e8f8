package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/agentlog"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/fetch"
	agentsvc "github.com/sutragrid/sutra/agent/service"
	"github.com/sutragrid/sutra/agent/upgrade"
)

// latestCheckEvery throttles "latest" agent-version checks (auto_update).
const latestCheckEvery = time.Minute

// selfUpdate adapts agent/upgrade to the agent's Upgrader hooks.
type selfUpdate struct {
	up         *upgrade.Upgrader
	autoUpdate bool
	log        *slog.Logger
	restart    context.CancelCauseFunc

	mu          sync.Mutex
	committed   bool
	lastLatest  time.Time
	lastSkipped string
}

// newUpgrader prepares the agent's self-update: it first settles an update
// in progress (counting this boot, rolling back when the new version keeps
// failing), then watches the probation window in the background. It returns
// agent.ErrRestartRequired when the agent must exit at once (rolled back).
func newUpgrader(ctx context.Context, cfg *config.Config, logger *slog.Logger, restart context.CancelCauseFunc) (*selfUpdate, error) {
	af, err := fetch.New(fetch.Options{
		BaseURL:  cfg.Storage.MasterBinaryURL,
		CacheDir: cfg.Agent.CacheDir,
		Artifact: "sutra-agent",
		Logger:   logger,
	})
	if err != nil {
		return nil, err
	}
	up, err := upgrade.New(upgrade.Options{DataDir: cfg.Agent.AgentDataDir, Fetcher: af, Logger: logger, Window: cfg.Agent.UpgradeWindow(),
		LogTail: func(n int) []string { return agentlog.Tail(agentlog.Path(cfg.Agent.AgentDataDir), n) }})
	if err != nil {
		return nil, err
	}
	st, err := up.Begin(ctx)
	if errors.Is(err, upgrade.ErrRestartRequired) {
		return nil, fmt.Errorf("%w: rolled back to the previous agent", agent.ErrRestartRequired)
	}
	if err != nil {
		logger.Error("agent upgrade state", "err", err)
	} else if st.Phase != "" {
		logger.Info("agent upgrade state", "phase", st.Phase, "from", st.FromVersion, "to", st.ToVersion, "message", st.Message)
	}
	s := &selfUpdate{up: up, autoUpdate: cfg.Agent.AutoUpdate, log: logger, restart: restart}
	go func() {
		if errors.Is(up.Watch(ctx), upgrade.ErrRestartRequired) {
			logger.Error("new agent did not commit within its window; rolled back, exiting so the previous agent starts")
			restart(agent.ErrRestartRequired)
		}
	}()
	return s, nil
}

// Committed is called after every successful heartbeat; the first one commits
// an agent update under probation.
func (s *selfUpdate) Committed() {
	s.mu.Lock()
	done := s.committed
	s.committed = true
	s.mu.Unlock()
	if done {
		return
	}
	if errors.Is(s.up.Committed(), upgrade.ErrRestartRequired) {
		s.restart(agent.ErrRestartRequired)
	}
}

// Desired applies the master's desired agent version ("" with auto_update
// means "latest").
func (s *selfUpdate) Desired(ctx context.Context, want string) error {
	if want == "" && s.autoUpdate {
		want = upgrade.Latest
	}
	if want == "" {
		return nil
	}
	s.mu.Lock()
	if want == upgrade.Latest {
		if time.Since(s.lastLatest) < latestCheckEvery {
			s.mu.Unlock()
			return nil
		}
		s.lastLatest = time.Now()
	}
	s.mu.Unlock()
	ok, why := s.up.ShouldUpgrade(want)
	if !ok {
		s.mu.Lock()
		if s.lastSkipped != want+why {
			s.lastSkipped = want + why
			s.log.Debug("no agent self-update", "want", want, "reason", why)
		}
		s.mu.Unlock()
		return nil
	}
	err := s.up.Apply(ctx, want)
	if errors.Is(err, upgrade.ErrRestartRequired) {
		return fmt.Errorf("%w: updated to %s", agent.ErrRestartRequired, want)
	}
	return err
}

// Status is the upgrade progress for heartbeats.
func (s *selfUpdate) Status() *controlplane.UpgradeStatus {
	st := s.up.Status()
	if st == nil {
		return nil
	}
	return &controlplane.UpgradeStatus{
		Phase:        string(st.Phase),
		FromVersion:  st.FromVersion,
		ToVersion:    st.ToVersion,
		Message:      st.Message,
		LastLogLines: st.LastLogLines,
		Updated:      st.Updated,
	}
}

// runUpgradeGuard is the detached watchdog a self-updating agent leaves
// behind: it restores the previous binary when the new one does not commit.
func runUpgradeGuard(ctx context.Context, args []string, stderr io.Writer) error {
	// A crash-looping release may have exhausted the service manager's
	// start limit by the time the guard restores the previous binary.
	opts := upgrade.GuardOptions{AfterRollback: agentsvc.StartAfterRollback}
	for i, a := range args {
		dir, ok := strings.CutPrefix(a, "--data-dir=")
		if !ok && (a == "--data-dir" || a == "-data-dir") && i+1 < len(args) {
			dir, ok = args[i+1], true
		}
		if ok {
			opts.LogTail = func(n int) []string { return agentlog.Tail(agentlog.Path(dir), n) }
		}
	}
	if code := upgrade.GuardMain(ctx, args, opts, stderr); code != 0 {
		return fmt.Errorf("upgrade-guard exited with status %d", code)
	}
	return nil
}
