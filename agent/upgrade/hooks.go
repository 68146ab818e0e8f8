package upgrade

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/agent/controlplane"
)

// StartOptions configures Start.
type StartOptions struct {
	// Options configure the Upgrader (Fetcher is required for Desired).
	Options
	// AutoUpdate makes an empty desired agent version mean "latest"
	// (config agent.auto_update).
	AutoUpdate bool
	// Restart is called, at most once, when the agent must exit so that the
	// service manager starts the binary now at the executable path (the
	// probation ended in a rollback). Required.
	Restart func(cause error)
	// RestartErr, when set, is wrapped (besides ErrRestartRequired) by every
	// restart error Start, Desired and Restart see, e.g. the agent's own
	// agent.ErrRestartRequired.
	RestartErr error
	// CommitRetryMin and CommitRetryMax bound the backoff between attempts
	// to record a commit that failed (defaults 200 ms and 5 s).
	CommitRetryMin, CommitRetryMax time.Duration
	// LatestEvery throttles "latest" version checks (default 1 min).
	LatestEvery time.Duration
}

// Hooks is the self-update as the agent's run loop drives it (it implements
// agent.Upgrader): Committed after each heartbeat, Desired on each
// reconcile, Status in each heartbeat. Committed and Status never wait for
// the state lock: the commit is recorded on a goroutine of its own, retried
// until it is durable, and Watch does not roll back an agent that
// heartbeated before its deadline.
type Hooks struct {
	up   *Upgrader
	opts StartOptions

	commitReq   chan struct{} // wakes the commit goroutine
	requested   atomic.Bool   // Committed was called once
	restartOnce sync.Once

	mu          sync.Mutex
	lastLatest  time.Time
	lastSkipped string
}

// Start settles an upgrade in progress (Begin: counting this boot, rolling
// back when the new version keeps failing) and then watches the probation
// window and records the commit in the background until ctx ends. It returns
// an error wrapping ErrRestartRequired when the agent must exit at once (it
// rolled back). A state it cannot read is logged, not fatal: the agent runs.
func Start(ctx context.Context, opts StartOptions) (*Hooks, error) {
	if opts.Restart == nil {
		return nil, errors.New("upgrade: StartOptions.Restart is required")
	}
	if opts.CommitRetryMin <= 0 {
		opts.CommitRetryMin = 200 * time.Millisecond
	}
	if opts.CommitRetryMax < opts.CommitRetryMin {
		opts.CommitRetryMax = max(5*time.Second, opts.CommitRetryMin)
	}
	if opts.LatestEvery <= 0 {
		opts.LatestEvery = time.Minute
	}
	up, err := New(opts.Options)
	if err != nil {
		return nil, err
	}
	h := &Hooks{up: up, opts: opts, commitReq: make(chan struct{}, 1)}
	h.opts.Options = up.opts // with defaults
	log := h.opts.Logger
	st, err := up.Begin(ctx)
	switch {
	case errors.Is(err, ErrRestartRequired):
		return nil, h.restartError("rolled back to the previous agent")
	case err != nil:
		log.Error("agent upgrade state", "err", err)
	case st.Phase != PhaseNone:
		log.Info("agent upgrade state", "phase", st.Phase, "from", st.FromVersion, "to", st.ToVersion, "message", st.Message)
	}
	go func() {
		if errors.Is(up.Watch(ctx), ErrRestartRequired) {
			log.Error("new agent did not commit within its window; rolled back, exiting so the previous agent starts")
			h.restart(h.restartError("rolled back: no heartbeat within the upgrade window"))
		}
	}()
	go h.commitLoop(ctx)
	return h, nil
}

// Upgrader is the Upgrader the hooks drive.
func (h *Hooks) Upgrader() *Upgrader { return h.up }

func (h *Hooks) restartError(why string) error {
	if h.opts.RestartErr != nil {
		return fmt.Errorf("%w: %w: %s", h.opts.RestartErr, ErrRestartRequired, why)
	}
	return fmt.Errorf("%w: %s", ErrRestartRequired, why)
}

func (h *Hooks) restart(cause error) {
	h.restartOnce.Do(func() { h.opts.Restart(cause) })
}

// Committed is called after every successful heartbeat. The first call
// tells Watch that the agent is healthy and wakes the goroutine that
// records the commit; it never blocks.
func (h *Hooks) Committed() {
	if h.requested.Swap(true) {
		return
	}
	h.up.WantCommit()
	select {
	case h.commitReq <- struct{}{}:
	default:
	}
}

// commitLoop records the commit once Committed was called, retrying with
// backoff until it is durable or ctx ends.
func (h *Hooks) commitLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-h.commitReq:
	}
	delay := h.opts.CommitRetryMin
	for attempt := 1; ; attempt++ {
		err := h.up.Committed()
		switch {
		case err == nil:
			return
		case errors.Is(err, ErrRestartRequired):
			h.opts.Logger.Error("agent upgrade was rolled back before its commit was recorded; exiting so the previous agent starts")
			h.restart(h.restartError("rolled back before the commit was recorded"))
			return
		}
		h.opts.Logger.Warn("record agent upgrade commit; retrying", "err", err, "attempt", attempt, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, h.opts.CommitRetryMax)
	}
}

// Desired applies the master's desired agent version ("" with AutoUpdate
// means "latest"). It returns an error wrapping ErrRestartRequired (and
// RestartErr) when the new binary is installed and the agent must exit.
func (h *Hooks) Desired(ctx context.Context, want string) error {
	if want == "" && h.opts.AutoUpdate {
		want = Latest
	}
	if want == "" {
		return nil
	}
	now := h.opts.Now()
	h.mu.Lock()
	if want == Latest {
		if !h.lastLatest.IsZero() && now.Sub(h.lastLatest) < h.opts.LatestEvery {
			h.mu.Unlock()
			return nil
		}
		h.lastLatest = now
	}
	h.mu.Unlock()
	if ok, why := h.up.ShouldUpgrade(want); !ok {
		h.mu.Lock()
		if h.lastSkipped != want+why {
			h.lastSkipped = want + why
			h.opts.Logger.Debug("no agent self-update", "want", want, "reason", why)
		}
		h.mu.Unlock()
		return nil
	}
	err := h.up.Apply(ctx, want)
	if errors.Is(err, ErrRestartRequired) {
		return h.restartError("updated to " + want)
	}
	return err
}

// Status is the upgrade progress for heartbeats (nil: none). It reads the
// state file without taking the lock (the file is replaced atomically).
func (h *Hooks) Status() *controlplane.UpgradeStatus {
	st := h.up.Status()
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
