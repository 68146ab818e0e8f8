package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultLogMaxBytes      = 10 << 20
	DefaultLogMaxFiles      = 3
	DefaultLogCheckInterval = time.Second
	DefaultTailLines        = 20
	DefaultStopGrace        = 10 * time.Second
	DefaultPollInterval     = time.Second

	DefaultHealthInterval     = 5 * time.Second
	DefaultHealthTimeout      = 2 * time.Second
	DefaultUnhealthyThreshold = 30 * time.Second
	DefaultStartTimeout       = 60 * time.Second

	// DefaultEventQueue is how many undelivered events the supervisor keeps
	// for a slow OnEvent before it drops the oldest.
	DefaultEventQueue = 1024
)

// startingProbeInterval is how often a starting node is probed until its
// first healthy answer (at most HealthOptions.Interval), so a node counts
// as running within a fraction of a second of being able to serve.
const startingProbeInterval = 100 * time.Millisecond

// Sentinel errors.
var (
	// ErrIdentityMismatch: the pid to adopt now belongs to another process.
	ErrIdentityMismatch = errors.New("process identity changed (pid reused)")
	// ErrExists: a node of that name is already supervised.
	ErrExists = errors.New("node already supervised")
	// ErrUnknownNode: no node of that name is supervised.
	ErrUnknownNode = errors.New("no such node")
	// ErrNodeEnded: the node's supervision ended (stopped or detached).
	ErrNodeEnded = errors.New("node supervision ended")
)

// HealthOptions configure the HTTP health probe of nodes with a HealthURL.
type HealthOptions struct {
	// Interval between two probes of a running node (default 5 s).
	Interval time.Duration
	// Timeout bounds one probe (default 2 s).
	Timeout time.Duration
	// Threshold: a running node without a healthy probe for this long is
	// killed and restarted like a crash (default 30 s). Must exceed Interval.
	Threshold time.Duration
	// StartTimeout: a starting node that is not healthy this long after it
	// started is killed and restarted like a crash (default 60 s).
	StartTimeout time.Duration
}

// Options configure a Supervisor. Zero fields take their defaults.
type Options struct {
	// Logger receives one structured event per decision; nil discards.
	Logger *slog.Logger
	// LogDir holds one log file per node, <LogDir>/<name>.log. Required.
	LogDir string
	// LogMaxBytes caps a log file before it is rotated (default 10 MiB).
	LogMaxBytes int64
	// LogMaxFiles is the number of files kept per node, the current one
	// included (default 3: name.log, name.log.1, name.log.2).
	LogMaxFiles int
	// LogCheckInterval is how often the size cap is checked (default 1 s).
	LogCheckInterval time.Duration
	// TailLines is how many last log lines Status keeps after an exit (default 20).
	TailLines int
	// StopGrace is the time between SIGTERM and SIGKILL (default 10 s).
	StopGrace time.Duration
	// PollInterval is how often an adopted process's identity is checked (default 1 s).
	PollInterval time.Duration
	// Health configures probes.
	Health HealthOptions
	// Restart is the restart policy of every node.
	Restart PolicyOptions
	// OnEvent, when set, receives the events in order, one at a time, from
	// a delivery goroutine of the supervisor: it may block (an fsynced
	// write) without delaying any node's restart or stop. Events wait in a
	// bounded queue meanwhile; when EventQueue events are waiting, the
	// oldest is dropped and counted (DroppedEvents), so a consumer that
	// must not miss a state reads Status as well.
	OnEvent func(Event)
	// EventQueue caps the undelivered events (default 1024).
	EventQueue int
}

// Validate reports every problem at once.
func (o Options) Validate() error {
	var errs []error
	if o.LogDir == "" {
		errs = append(errs, errors.New("log dir is empty"))
	}
	neg := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	neg("log check interval", o.LogCheckInterval)
	neg("stop grace", o.StopGrace)
	neg("poll interval", o.PollInterval)
	neg("health interval", o.Health.Interval)
	neg("health timeout", o.Health.Timeout)
	neg("unhealthy threshold", o.Health.Threshold)
	neg("start timeout", o.Health.StartTimeout)
	if o.LogMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("log max bytes %d is negative", o.LogMaxBytes))
	}
	if o.LogMaxFiles < 0 {
		errs = append(errs, fmt.Errorf("log max files %d is negative", o.LogMaxFiles))
	}
	if o.TailLines < 0 {
		errs = append(errs, fmt.Errorf("tail lines %d is negative", o.TailLines))
	}
	if o.EventQueue < 0 {
		errs = append(errs, fmt.Errorf("event queue %d is negative", o.EventQueue))
	}
	d := o.withDefaults()
	if o.Health.Threshold >= 0 && o.Health.Interval >= 0 && d.Health.Threshold <= d.Health.Interval {
		errs = append(errs, fmt.Errorf("unhealthy threshold %s must exceed the health interval %s", d.Health.Threshold, d.Health.Interval))
	}
	if err := o.Restart.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	set := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LogMaxBytes == 0 {
		o.LogMaxBytes = DefaultLogMaxBytes
	}
	if o.LogMaxFiles == 0 {
		o.LogMaxFiles = DefaultLogMaxFiles
	}
	if o.TailLines == 0 {
		o.TailLines = DefaultTailLines
	}
	if o.EventQueue == 0 {
		o.EventQueue = DefaultEventQueue
	}
	set(&o.LogCheckInterval, DefaultLogCheckInterval)
	set(&o.StopGrace, DefaultStopGrace)
	set(&o.PollInterval, DefaultPollInterval)
	set(&o.Health.Interval, DefaultHealthInterval)
	set(&o.Health.Timeout, DefaultHealthTimeout)
	set(&o.Health.Threshold, DefaultUnhealthyThreshold)
	set(&o.Health.StartTimeout, DefaultStartTimeout)
	return o
}

// Spec describes a node to run.
type Spec struct {
	// Name identifies the node (the node id): letters, digits, '.', '_',
	// '-'; it names the log file.
	Name string
	// Path is the executable; Args its arguments (without argv[0]).
	Path string
	Args []string
	// Env is added to the supervisor's own environment (later entries win).
	Env []string
	// Dir is the working directory ("" = the supervisor's).
	Dir string
	// HealthURL is probed with GET; 200 means healthy. Empty: no probes,
	// the node counts as running (and healthy) as soon as it started.
	HealthURL string
	// PreStart, when set, runs before every start and restart (not before
	// an adoption); an error fails that start like a start error, so the
	// restart policy applies. The agent re-verifies the binary's checksum here.
	PreStart func(ctx context.Context) error
}

// HealthURL returns the conventional probe URL of a node on a local port.
func HealthURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) + "/healthz" }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate reports every problem with s at once.
func (s Spec) Validate() error {
	var errs []error
	if !nameRE.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("node name %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name))
	}
	if s.Path == "" {
		errs = append(errs, errors.New("executable path is empty"))
	}
	if s.HealthURL != "" {
		u, err := url.Parse(s.HealthURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("health URL %q: want http://host:port/path", s.HealthURL))
		}
	}
	return errors.Join(errs...)
}

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

// EventKind names an event.
type EventKind string

// Event kinds.
const (
	EventStarted       EventKind = "started"
	EventAdopted       EventKind = "adopted"
	EventStartFailed   EventKind = "start_failed"
	EventHealthy       EventKind = "healthy"
	EventHealthFailing EventKind = "health_failing" // a running node's probe failed
	EventUnhealthy     EventKind = "unhealthy"      // unhealthy past the threshold: killed
	EventExited        EventKind = "exited"
	EventRestart       EventKind = "restart" // restart scheduled after Delay
	EventGaveUp        EventKind = "gave_up" // StateFailed
	EventStopping      EventKind = "stopping"
	EventStopped       EventKind = "stopped"
	EventDetached      EventKind = "detached"
	EventReset         EventKind = "reset"
)

// Event is one thing that happened to a node, or one decision about it.
type Event struct {
	Time      time.Time
	Node      string
	Kind      EventKind
	PID       int
	StartTime uint64
	Exit      string
	Delay     time.Duration
	Restarts  int
	Failures  int
	Message   string
}

// Supervisor runs nodes. It is safe for concurrent use.
type Supervisor struct {
	opts   Options
	log    *slog.Logger
	client *http.Client

	mu    sync.Mutex
	nodes map[string]*Node

	events eventQueue
}

// New validates opts and returns a supervisor with no nodes.
func New(opts Options) (*Supervisor, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("supervisor options: %w", err)
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("supervisor log dir: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // probes go to the node, never through a proxy
	tr.MaxIdleConnsPerHost = 1
	return &Supervisor{
		opts:   opts,
		log:    opts.Logger,
		client: &http.Client{Transport: tr, Timeout: opts.Health.Timeout},
		nodes:  map[string]*Node{},
	}, nil
}

// LogPath is the log file of the node named name.
func (s *Supervisor) LogPath(name string) string {
	return filepath.Join(s.opts.LogDir, name+".log")
}

// Start supervises a new node: it is started at once (by its goroutine;
// watch Status or OnEvent for the pid and for start errors).
func (s *Supervisor) Start(spec Spec) (*Node, error) {
	return s.add(spec, nil)
}

// Adopt supervises a node that is already running — started by a previous
// agent, identified by pid and the start time recorded then
// (ProcessStartTime). It fails with ErrNoProcess or ErrIdentityMismatch
// when that process is gone; start a fresh node then. When the adopted
// process dies, the restart policy starts a fresh child from spec.
func (s *Supervisor) Adopt(spec Spec, pid int, startTime uint64) (*Node, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	a, err := adoptProc(pid, startTime, s.opts.PollInterval)
	if err != nil {
		return nil, err
	}
	n, err := s.add(spec, a)
	if err != nil {
		a.release()
		return nil, err
	}
	return n, nil
}

func (s *Supervisor) add(spec Spec, p proc) (*Node, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	pol, err := NewPolicy(s.opts.Restart)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.nodes[spec.Name]; ok {
		select {
		case <-old.done:
		default:
			return nil, fmt.Errorf("node %s: %w", spec.Name, ErrExists)
		}
	}
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
	s.nodes[spec.Name] = n
	go n.run(p)
	return n, nil
}

// Node returns the node named name, or nil.
func (s *Supervisor) Node(name string) *Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[name]
}

// Status returns a snapshot of every node, sorted by name.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	nodes := make([]*Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stop stops the node named name gracefully and forgets it.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	n := s.Node(name)
	if n == nil {
		return fmt.Errorf("stop %s: %w", name, ErrUnknownNode)
	}
	if err := n.Stop(ctx); err != nil {
		return err
	}
	s.forget(n)
	return nil
}

func (s *Supervisor) forget(n *Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes[n.spec.Name] == n {
		delete(s.nodes, n.spec.Name)
	}
}

// StopAll stops every node concurrently and waits (bounded by ctx).
func (s *Supervisor) StopAll(ctx context.Context) error {
	s.mu.Lock()
	nodes := make([]*Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			if errs[i] = n.Stop(ctx); errs[i] == nil {
				s.forget(n)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Detach ends supervision of every node without stopping them (an agent
// exiting with stop_nodes_on_exit = false; the next agent re-adopts them
// from the pids and start times it recorded).
func (s *Supervisor) Detach() {
	s.mu.Lock()
	nodes := s.nodes
	s.nodes = map[string]*Node{}
	s.mu.Unlock()
	for _, n := range nodes {
		n.Detach()
	}
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
		go n.probeLoop(results, quit)
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

// probeLoop probes the health URL until quit: every startingProbeInterval
// until the first healthy answer, then every Health.Interval.
func (n *Node) probeLoop(results chan<- error, quit <-chan struct{}) {
	o := n.sup.opts
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-quit
		cancel()
	}()
	// While starting: 10 ms, 20 ms, 40 ms … up to startingProbeInterval,
	// so a fast node counts as running within milliseconds of serving.
	interval := min(10*time.Millisecond, o.Health.Interval)
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		err := n.probe(ctx)
		select {
		case results <- err:
		case <-quit:
			return
		}
		if err == nil {
			interval = o.Health.Interval
		} else if interval < startingProbeInterval {
			interval = min(2*interval, startingProbeInterval, o.Health.Interval)
		}
		t.Reset(interval)
	}
}

func (n *Node) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.sup.opts.Health.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.spec.HealthURL, nil)
	if err != nil {
		return err
	}
	resp, err := n.sup.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", n.spec.HealthURL, resp.Status)
	}
	return nil
}
