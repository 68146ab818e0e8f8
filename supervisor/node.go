package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// State is a node's lifecycle state.
type State string

// States of a node.
const (
	StateStarting State = "starting" // started, not yet healthy
	StateRunning  State = "running"  // healthy (or started, without HealthURL)
	StateStopping State = "stopping" // SIGTERM sent, waiting for the exit
	StateStopped  State = "stopped"  // stopped on request; supervision ended
	StateBackoff  State = "backoff"  // failed, waiting to be restarted
	StateFailed   State = "failed"   // gave up; waits for Reset or Stop
)

// Status is a snapshot of one node.
type Status struct {
	Name  string
	State State
	// Since is when State was entered.
	Since time.Time
	// PID and StartTime identify the current process (0 when none).
	PID       int
	StartTime uint64
	// Adopted: the process was started by a previous agent.
	Adopted bool
	// Restarts counts restarts decided by the policy.
	Restarts int
	// Failures counts failures within the policy's interval.
	Failures int
	// LastExit describes the last exit ("exit status 3", "signal: killed",
	// "start failed: …"); LastExitAt is when it happened.
	LastExit   string
	LastExitAt time.Time
	// LastLog holds the last lines of the log at the last exit.
	LastLog []string
	// NextRestart is when a node in StateBackoff restarts.
	NextRestart time.Time
	// Message explains the state in words.
	Message string
	// LogPath is the node's current log file.
	LogPath string
	// Supervised is false once supervision ended (stopped or detached).
	Supervised bool
}

// Node is one supervised node.
type Node struct {
	spec    Spec
	sup     *Supervisor
	policy  *Policy // owned by the run goroutine
	log     *slog.Logger
	logPath string

	stopCh, detachCh     chan struct{}
	stopOnce, detachOnce sync.Once
	resetCh              chan struct{}
	done                 chan struct{}

	mu sync.Mutex
	st Status
}

// newNode returns the node of spec, in StateStarting; run starts it.
func newNode(s *Supervisor, spec Spec, pol *Policy) *Node {
	n := &Node{
		spec:     spec,
		sup:      s,
		policy:   pol,
		log:      s.log.With("node", spec.Name),
		logPath:  s.LogPath(spec.Name),
		stopCh:   make(chan struct{}),
		detachCh: make(chan struct{}),
		resetCh:  make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	n.st = Status{Name: spec.Name, State: StateStarting, Since: time.Now(), LogPath: n.logPath, Supervised: true}
	return n
}

// Name is the node's name.
func (n *Node) Name() string { return n.spec.Name }

// Spec is what the node runs.
func (n *Node) Spec() Spec { return n.spec }

// Status returns a snapshot.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.st
	st.LastLog = append([]string(nil), n.st.LastLog...)
	return st
}

// Done is closed when supervision ended (stopped or detached).
func (n *Node) Done() <-chan struct{} { return n.done }

// Stop stops the node (SIGTERM to its group, the grace period, SIGKILL)
// and ends its supervision. It waits until the node is gone or ctx ends;
// the stop continues after ctx ends.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() { close(n.stopCh) })
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", n.spec.Name, ctx.Err())
	}
}

// Detach ends supervision and leaves the process running.
func (n *Node) Detach() {
	n.detachOnce.Do(func() { close(n.detachCh) })
	<-n.done
}

// Reset forgets the node's failures; a failed node, or one waiting in
// backoff, is started again at once (the master asked for it again).
func (n *Node) Reset() error {
	select {
	case <-n.done:
		return fmt.Errorf("reset %s: %w", n.spec.Name, ErrNodeEnded)
	default:
	}
	select {
	case n.resetCh <- struct{}{}:
	default: // a reset is already pending
	}
	return nil
}

func (n *Node) update(f func(*Status)) {
	n.mu.Lock()
	f(&n.st)
	n.mu.Unlock()
}

func (n *Node) setState(s State, msg string) {
	n.update(func(st *Status) {
		if st.State != s {
			st.State, st.Since = s, time.Now()
		}
		st.Message = msg
	})
}

// emit logs ev and delivers it to OnEvent.
func (n *Node) emit(ev Event) {
	ev.Time, ev.Node = time.Now(), n.spec.Name
	attrs := []any{"event", string(ev.Kind)}
	if ev.PID != 0 {
		attrs = append(attrs, "pid", ev.PID)
	}
	if ev.Exit != "" {
		attrs = append(attrs, "exit", ev.Exit)
	}
	if ev.Kind == EventRestart {
		attrs = append(attrs, "delay", ev.Delay, "restarts", ev.Restarts)
	}
	if ev.Failures != 0 {
		attrs = append(attrs, "failures", ev.Failures)
	}
	if ev.Message != "" {
		attrs = append(attrs, "msg", ev.Message)
	}
	level := slog.LevelInfo
	switch ev.Kind {
	case EventExited, EventUnhealthy, EventStartFailed, EventHealthFailing:
		level = slog.LevelWarn
	case EventGaveUp:
		level = slog.LevelError
	}
	n.log.Log(context.Background(), level, "node "+string(ev.Kind), attrs...)
	n.sup.events.push(n.sup, ev)
}

type outcome int

const (
	outExited outcome = iota
	outUnhealthy
	outStop
	outDetach
)

// run is the node's goroutine; p is an adopted process or nil.
func (n *Node) run(p proc) {
	defer close(n.done)
	defer n.update(func(st *Status) { st.Supervised = false })
	o := n.sup.opts
	if p != nil {
		n.update(func(st *Status) { st.PID, st.StartTime, st.Adopted = p.pid(), p.startTime(), true })
		n.emit(Event{Kind: EventAdopted, PID: p.pid(), StartTime: p.startTime()})
	}
	for {
		if p == nil {
			n.setState(StateStarting, "starting "+n.spec.Path)
			c, err := n.start()
			if err != nil {
				now := time.Now()
				n.update(func(st *Status) {
					st.PID, st.StartTime, st.Adopted = 0, 0, false
					st.LastExit, st.LastExitAt = "start failed: "+err.Error(), now
				})
				n.emit(Event{Kind: EventStartFailed, Message: err.Error()})
				if !n.decide(InputStartFailed) {
					return
				}
				continue
			}
			if c.groupErr != nil {
				n.log.Warn("node runs without its own process group; stopping it may leave what it started", "err", c.groupErr)
			}
			p = c
			n.update(func(st *Status) { st.PID, st.StartTime, st.Adopted = c.pid(), c.startTime(), false })
			n.emit(Event{Kind: EventStarted, PID: c.pid(), StartTime: c.startTime()})
		}
		n.policy.Started()
		out, why := n.watch(p)
		switch out {
		case outStop:
			n.terminate(p, "stop requested")
			n.policy.Decide(InputStop)
			n.stopped(p.exit())
			return
		case outDetach:
			p.release()
			n.setState(n.Status().State, "detached: the process keeps running unsupervised")
			n.emit(Event{Kind: EventDetached, PID: p.pid(), StartTime: p.startTime()})
			return
		case outUnhealthy:
			n.emit(Event{Kind: EventUnhealthy, PID: p.pid(), Message: why})
			n.terminate(p, why)
		}
		exit := p.exit()
		if out == outUnhealthy {
			exit = "killed: " + why + " (" + exit + ")"
		}
		_, _ = rotateIfNeeded(n.logPath, o.LogMaxBytes, o.LogMaxFiles)
		tail := tailLines(n.logPath, o.TailLines)
		now := time.Now()
		n.update(func(st *Status) {
			st.PID, st.StartTime, st.Adopted = 0, 0, false
			st.LastExit, st.LastExitAt, st.LastLog = exit, now, tail
		})
		n.emit(Event{Kind: EventExited, PID: p.pid(), Exit: exit})
		in := InputExited
		if out == outUnhealthy {
			in = InputUnhealthy
		}
		p = nil
		if !n.decide(in) {
			return
		}
	}
}

// start runs the PreStart hook, then starts the child.
func (n *Node) start() (*childProc, error) {
	if n.spec.PreStart != nil {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-n.stopCh:
			case <-n.detachCh:
			case <-ctx.Done():
			}
			cancel()
		}()
		err := n.spec.PreStart(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("pre-start check: %w", err)
		}
	}
	return startChild(n.spec, n.logPath)
}

func (n *Node) stopped(exit string) {
	n.update(func(st *Status) {
		st.PID, st.StartTime, st.Adopted, st.NextRestart = 0, 0, false, time.Time{}
		if exit != "" {
			st.LastExit, st.LastExitAt = exit, time.Now()
		}
	})
	n.setState(StateStopped, "stopped on request")
	n.emit(Event{Kind: EventStopped, Exit: exit})
}

// decide applies the policy after a failure and waits as it says. It
// returns true to start the node again, false when supervision ends.
func (n *Node) decide(in Input) bool {
	d := n.policy.Decide(in)
	n.update(func(st *Status) { st.Failures = d.Failures })
	var timer <-chan time.Time
	switch d.Action {
	case ActionRestart:
		next := time.Now().Add(d.Delay)
		n.update(func(st *Status) { st.Restarts++; st.NextRestart = next })
		n.setState(StateBackoff, d.Reason)
		st := n.Status()
		n.emit(Event{Kind: EventRestart, Delay: d.Delay, Restarts: st.Restarts, Failures: d.Failures, Message: d.Reason})
		t := time.NewTimer(d.Delay)
		defer t.Stop()
		timer = t.C
	case ActionGiveUp:
		n.setState(StateFailed, d.Reason)
		n.emit(Event{Kind: EventGaveUp, Failures: d.Failures, Message: d.Reason})
	}
	defer n.update(func(st *Status) { st.NextRestart = time.Time{} })
	select {
	case <-timer:
		return true
	case <-n.stopCh:
		n.policy.Decide(InputStop)
		n.stopped("")
		return false
	case <-n.detachCh:
		n.emit(Event{Kind: EventDetached})
		return false
	case <-n.resetCh:
		n.policy.Reset()
		n.update(func(st *Status) { st.Failures = 0 })
		n.emit(Event{Kind: EventReset, Message: "failures forgotten; starting now"})
		return true
	}
}

// watch waits until the process exits, turns unhealthy past the
// threshold, or supervision is asked to stop or detach.
func (n *Node) watch(p proc) (outcome, string) {
	o := n.sup.opts
	quit := make(chan struct{})
	defer close(quit)
	var results chan error
	var deadline <-chan time.Time
	var dt *time.Timer
	if n.spec.HealthURL != "" {
		results = make(chan error)
		go prober{client: n.sup.client, url: n.spec.HealthURL, opts: o.Health}.loop(results, quit)
		dt = time.NewTimer(o.Health.StartTimeout)
		defer dt.Stop()
		deadline = dt.C
		n.setState(StateStarting, fmt.Sprintf("pid %d: waiting for %s", p.pid(), n.spec.HealthURL))
	} else {
		n.policy.Healthy()
		n.setState(StateRunning, fmt.Sprintf("pid %d", p.pid()))
	}
	logTick := time.NewTicker(o.LogCheckInterval)
	defer logTick.Stop()
	healthy, everHealthy := false, false
	var lastErr error
	for {
		select {
		case <-p.done():
			return outExited, ""
		case err := <-results:
			if err == nil {
				n.policy.Healthy()
				dt.Reset(o.Health.Threshold)
				if !healthy {
					healthy, everHealthy = true, true
					n.setState(StateRunning, fmt.Sprintf("pid %d: healthy", p.pid()))
					n.emit(Event{Kind: EventHealthy, PID: p.pid()})
				}
				continue
			}
			lastErr = err
			if healthy {
				healthy = false
				n.policy.Unhealthy()
				n.setState(StateRunning, fmt.Sprintf("pid %d: health check failing: %v", p.pid(), err))
				n.emit(Event{Kind: EventHealthFailing, PID: p.pid(), Message: err.Error()})
			}
		case <-deadline:
			if everHealthy {
				return outUnhealthy, fmt.Sprintf("unhealthy for %s: %v", o.Health.Threshold, lastErr)
			}
			return outUnhealthy, fmt.Sprintf("not healthy within %s of starting: %v", o.Health.StartTimeout, lastErr)
		case <-n.stopCh:
			return outStop, ""
		case <-n.detachCh:
			return outDetach, ""
		case <-n.resetCh:
			n.policy.Reset()
			n.update(func(st *Status) { st.Failures = 0 })
			n.emit(Event{Kind: EventReset, Message: "failures forgotten"})
		case <-logTick.C:
			if _, err := rotateIfNeeded(n.logPath, o.LogMaxBytes, o.LogMaxFiles); err != nil {
				n.log.Warn("log rotation failed", "path", n.logPath, "err", err)
			}
		}
	}
}

// terminate stops p: SIGTERM to its group, the grace period, SIGKILL.
func (n *Node) terminate(p proc, reason string) {
	grace := n.sup.opts.StopGrace
	n.setState(StateStopping, reason)
	n.emit(Event{Kind: EventStopping, PID: p.pid(), Message: reason})
	if err := p.term(); err != nil {
		n.log.Warn("graceful stop impossible; killing", "pid", p.pid(), "err", err)
		grace = 0
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done():
		return
	case <-t.C:
	}
	if grace > 0 {
		n.log.Warn("node did not stop within the grace period; killing its process group", "pid", p.pid(), "grace", grace)
	}
	if err := p.kill(); err != nil {
		n.log.Error("kill node", "pid", p.pid(), "err", err)
	}
	wait := time.NewTimer(10*time.Second + 2*n.sup.opts.PollInterval)
	defer wait.Stop()
	select {
	case <-p.done():
	case <-wait.C:
		n.log.Error("node still alive after SIGKILL", "pid", p.pid())
	}
}
