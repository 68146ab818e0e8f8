// Package agent runs a Sutra Grid agent: it keeps the agent registered with
// its master, makes the storage nodes it runs equal to the master's desired
// nodes, and reports what actually runs in every heartbeat.
//
// Trust model: a storage-server binary is started only from a verified cache
// entry (SHA-256 checked against the master's metadata and verify endpoint at
// download, and re-hashed before every start), or from storage.binary_path,
// which the operator vouches for. A cache entry that no longer matches its
// recorded checksum is deleted and fetched again; the node waits in backoff
// meanwhile.
//
// Availability: the master is never required for nodes to keep running. When
// it is unreachable the agent keeps supervising what it runs (and what its
// record says it ran), retrying the master in the background. When the agent
// itself restarts, it re-adopts the nodes that are still alive (same pid,
// process start time, boot and executable) instead of starting duplicates,
// so storage does not blink during an agent upgrade; a corrupt node record
// is kept aside and rebuilt from the running nodes (see recover.go).
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/version"
	"github.com/sutragrid/sutra/supervisor"
)

// Options configure Run.
type Options struct {
	// Config is the loaded agent configuration. Required.
	Config *config.Config
	// Logger receives the agent's events (default: discard).
	Logger *slog.Logger
	// StopNodesOnExit stops every node gracefully when Run returns; false
	// leaves them running for the next agent to re-adopt.
	StopNodesOnExit bool
	// ProgressBar, when set, draws download progress (a terminal).
	ProgressBar io.Writer
	// StopGrace is the SIGTERM-to-SIGKILL grace of nodes (default 10 s).
	StopGrace time.Duration
	// Restart overrides the supervisor's restart policy (zero: defaults).
	Restart supervisor.PolicyOptions
	// ReconcileInterval is how often the agent re-checks desired against
	// actual state without being woken (default 2 s).
	ReconcileInterval time.Duration
	// UpgradeWindow is how long a node upgraded to a new storage-server
	// version has to become healthy before it is put back (default 60 s).
	UpgradeWindow time.Duration
	// Hooks for the agent's self-update (optional); see Upgrader.
	Upgrader Upgrader
}

// Upgrader is the agent's self-update, driven by the master's desired agent
// version. Implemented by package agent/upgrade; nil disables self-update.
type Upgrader interface {
	// Committed is called once the agent has registered and heartbeated.
	Committed()
	// Desired is called on every reconcile with the master's desired agent
	// version ("" = none requested); it returns an error wrapping
	// ErrRestartRequired when the agent must exit for its new binary.
	Desired(ctx context.Context, agentVersion string) error
	// Status is the upgrade progress reported to the master (nil: none).
	Status() *controlplane.UpgradeStatus
}

// ErrRestartRequired is returned by Run when the agent applied an update of
// itself and must exit so that its service manager starts the new binary.
var ErrRestartRequired = errors.New("agent restart required")

// Agent is one running agent. Create it with New, run it with Run.
type Agent struct {
	opts      Options
	cfg       *config.Config
	log       *slog.Logger
	fetcher   *fetch.Fetcher // nil when storage.binary_path is set
	store     *state.Store
	sup       *supervisor.Supervisor
	cp        *controlplane.Client
	advertise string // host part of node endpoints

	wake chan struct{}

	saveMu sync.Mutex // serialises writes of the node record
	failMu sync.Mutex // serialises writes of the failed-upgrade record

	// Long operations run as jobs (see job) under jobCtx, which ends with Run.
	jobCtx     context.Context
	cancelJobs context.CancelFunc
	jobs       sync.WaitGroup
	eventsOff  atomic.Bool // set on the way out: late supervisor events no longer touch the record
	recovery   recovery    // boot id, node markers, record recovery (recover.go)

	mu            sync.Mutex
	rec           state.Record
	desired       *controlplane.Desired
	applied       uint64
	binary        *cache.Entry           // what new nodes start from
	binaryVersion string                 // the desired version binary was resolved for ("latest" or exact)
	binaryGen     uint64                 // the generation binary was resolved at
	pending       map[string]string      // desired node -> why it is not running yet
	stopped       map[string]stoppedNode // recently stopped nodes, reported for a while
	failures      state.Failures         // storage-server checksum -> the node upgrade it failed (persisted)
	nodeNotes     map[string]string      // node -> outcome of its last upgrade attempt, reported to the master

	restartErr error           // set by the self-update job: Run must return it
	selfJob    *job            // the agent's self-update (key: desired agent version)
	fetchJob   *job            // storage-server download (key: desired version, and generation for latest)
	pruneJob   *job            // cache pruning
	upgrades   map[string]*job // node -> its upgrade job (key: target checksum); one runs at a time
	stopping   map[string]*job // node -> its stop job
}

type stoppedNode struct {
	status controlplane.NodeStatus
	until  time.Time
	sent   bool // in a report a successful heartbeat carried: the master has seen it
}

// New prepares an agent from opts without starting anything.
func New(opts Options) (*Agent, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("agent: Config is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReconcileInterval <= 0 {
		opts.ReconcileInterval = 2 * time.Second
	}
	if opts.UpgradeWindow <= 0 {
		opts.UpgradeWindow = 60 * time.Second
	}
	a := &Agent{
		opts:      opts,
		cfg:       cfg,
		log:       opts.Logger,
		wake:      make(chan struct{}, 1),
		pending:   map[string]string{},
		stopped:   map[string]stoppedNode{},
		nodeNotes: map[string]string{},
		upgrades:  map[string]*job{},
		stopping:  map[string]*job{},
	}
	a.jobCtx, a.cancelJobs = context.WithCancel(context.Background())
	var err error
	if a.store, err = state.Open(cfg.Agent.AgentDataDir); err != nil {
		return nil, err
	}
	if err := a.loadRecord(); err != nil {
		return nil, err
	}
	a.failures = a.loadFailures()
	if cfg.Storage.BinaryPath == "" {
		if !cfg.Agent.AutoDownloadBinary {
			return nil, errors.New("storage.binary_path is empty and agent.auto_download_binary is false: set one of them")
		}
		a.fetcher, err = fetch.New(fetch.Options{
			BaseURL:     cfg.Storage.MasterBinaryURL,
			CacheDir:    cfg.Agent.CacheDir,
			Logger:      a.log,
			ProgressBar: opts.ProgressBar,
		})
		if err != nil {
			return nil, err
		}
	}
	a.sup, err = supervisor.New(supervisor.Options{
		Logger:    a.log,
		LogDir:    filepath.Join(cfg.Agent.AgentDataDir, "logs"),
		StopGrace: opts.StopGrace,
		Health: supervisor.HealthOptions{
			Interval:  cfg.Monitoring.HealthCheckInterval(),
			Timeout:   cfg.Monitoring.HealthCheckTimeout(),
			Threshold: cfg.Monitoring.UnhealthyThreshold(),
		},
		Restart: a.restartPolicy(),
		OnEvent: a.onNodeEvent,
	})
	if err != nil {
		return nil, err
	}
	a.advertise = advertiseHost(cfg.Agent.MasterHost)
	plat, arch, err := platform.Current()
	if err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	instanceID, replaced, err := controlplane.LoadInstanceID(cfg.Agent.AgentDataDir)
	if err != nil {
		return nil, err
	}
	if replaced != "" {
		a.log.Warn("instance id file held no id: kept it aside and created a new one", "kept_at", replaced)
	}
	a.cp, err = controlplane.New(controlplane.Options{
		MasterAddr:        cfg.Agent.MasterHost,
		AgentID:           cfg.Agent.AgentID,
		InstanceID:        instanceID,
		Hostname:          hostname,
		Platform:          plat,
		Arch:              arch,
		AgentVersion:      version.Version,
		MaxStorageNodes:   cfg.Agent.MaxStorageNodes,
		Labels:            cfg.Agent.Labels,
		HeartbeatInterval: cfg.Monitoring.HeartbeatInterval(),
		Logger:            a.log,
		Report:            a.report,
		OnDesired:         a.onDesired,
		OnHeartbeat:       a.onHeartbeat,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) restartPolicy() supervisor.PolicyOptions {
	p := a.opts.Restart
	if p.MaxFailures == 0 {
		p.MaxFailures = a.cfg.Monitoring.RestartMaxFailures
	}
	if p.Interval == 0 {
		p.Interval = a.cfg.Monitoring.RestartWindow()
	}
	if !a.cfg.Monitoring.RestartFailedNodes {
		p.NoRestart = true
	}
	return p
}

// Run runs the agent until ctx ends. It re-adopts recorded nodes, starts the
// control-plane client and reconciles until then; on the way out it stops
// its nodes or leaves them running, as Options.StopNodesOnExit says.
func Run(ctx context.Context, opts Options) error {
	a, err := New(opts)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// Run is the agent's main loop; see the package function Run.
func (a *Agent) Run(ctx context.Context) error {
	defer a.cp.Close()
	a.log.Info("sutra-agent starting", "version", version.Version, "agent", a.cfg.Agent.AgentID,
		"master", a.cfg.Agent.MasterHost, "binaries", a.cfg.Storage.MasterBinaryURL,
		"data", a.cfg.Agent.AgentDataDir, "cache", a.cfg.Agent.CacheDir)
	a.adopt()

	cpCtx, cancelCP := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.cp.Run(cpCtx) })
	stopJobs := context.AfterFunc(ctx, a.cancelJobs)
	defer stopJobs()

	runErr := a.loop(ctx)
	cancelCP()
	a.cancelJobs()
	wg.Wait()
	a.jobs.Wait()
	// An agent that exits for its own update leaves its nodes running
	// whatever stop_nodes_on_exit says: the new agent re-adopts them.
	restarting := errors.Is(runErr, ErrRestartRequired) || errors.Is(context.Cause(ctx), ErrRestartRequired)
	a.shutdown(a.opts.StopNodesOnExit && !restarting)
	return runErr
}

func (a *Agent) loop(ctx context.Context) error {
	ticker := time.NewTicker(a.opts.ReconcileInterval)
	defer ticker.Stop()
	for {
		if err := a.reconcile(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-a.wake:
		}
	}
}

func (a *Agent) shutdown(stopNodes bool) {
	// A fresh context: the run context has ended, the stop must still finish.
	grace := a.opts.StopGrace
	if grace <= 0 {
		grace = supervisor.DefaultStopGrace
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace+5*time.Second)
	defer cancel()
	// Apply the events still queued, then ignore the ones the stop or
	// detach below produces: the record is written here, last.
	if err := a.sup.WaitEvents(ctx); err != nil {
		a.log.Warn("node events not applied before exit", "err", err)
	}
	a.eventsOff.Store(true)
	if stopNodes {
		a.log.Info("stopping nodes before exit", "nodes", len(a.sup.Status()))
		if err := a.sup.StopAll(ctx); err != nil {
			a.log.Error("stop nodes", "err", err)
		}
		a.mu.Lock()
		for id, n := range a.rec.Nodes {
			n.PID, n.StartTime = 0, 0
			a.rec.Nodes[id] = n
		}
		a.mu.Unlock()
	} else {
		a.log.Info("leaving nodes running for the next agent to re-adopt", "nodes", len(a.sup.Status()))
		a.sup.Detach()
	}
	a.saveRecord()
	a.log.Info("sutra-agent stopped")
}

// nudge wakes the reconcile loop.
func (a *Agent) nudge() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) onDesired(d controlplane.Desired) {
	a.mu.Lock()
	changed := a.desired == nil || a.desired.Generation != d.Generation
	a.desired = &d
	a.mu.Unlock()
	if changed {
		a.nudge()
	}
}

func (a *Agent) onHeartbeat() {
	// The master dropped the stopped nodes this heartbeat reported; reporting
	// them again would make it record (and announce) them anew.
	a.mu.Lock()
	for id, s := range a.stopped {
		if s.sent {
			delete(a.stopped, id)
		}
	}
	a.mu.Unlock()
	if a.opts.Upgrader != nil {
		a.opts.Upgrader.Committed()
	}
}

// onNodeEvent runs on the supervisor's event delivery goroutine (never on a
// node's), so the fsynced write of the record delays no restart. Events can
// arrive late or be dropped under load: the record takes the pid the
// supervisor reports now, not the one the event carries.
func (a *Agent) onNodeEvent(ev supervisor.Event) {
	switch ev.Kind {
	case supervisor.EventStarted, supervisor.EventAdopted,
		supervisor.EventExited, supervisor.EventGaveUp, supervisor.EventStopped:
	default:
		return
	}
	if a.eventsOff.Load() {
		return
	}
	var pid int
	var start uint64
	if n := a.sup.Node(ev.Node); n != nil {
		if st := n.Status(); st.Supervised {
			pid, start = st.PID, st.StartTime
		}
	}
	a.mu.Lock()
	n, ok := a.rec.Nodes[ev.Node]
	changed := ok && (n.PID != pid || n.StartTime != start || (pid != 0 && n.BootID != a.recovery.bootID))
	if changed {
		n.PID, n.StartTime, n.BootID = pid, start, a.recovery.bootID
		a.rec.Nodes[ev.Node] = n
	}
	a.mu.Unlock()
	if changed {
		a.saveRecord()
	}
}

func (a *Agent) saveRecord() {
	// One writer at a time, copying under it, so that an older snapshot can
	// never overwrite a newer one on disk.
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	a.mu.Lock()
	rec := state.Record{Nodes: make(map[string]state.Node, len(a.rec.Nodes))}
	for k, v := range a.rec.Nodes {
		rec.Nodes[k] = v
	}
	a.mu.Unlock()
	if err := a.store.Save(rec); err != nil {
		a.log.Error("save node record", "err", err)
	}
}

// spec describes how node n runs from binary entry.
func (a *Agent) spec(n state.Node, entry cache.Entry) supervisor.Spec {
	return supervisor.Spec{
		Name: n.NodeID,
		Path: entry.Path,
		Args: []string{"--port", strconv.Itoa(n.Port), "--data-dir", n.DataDir, "--node-id", n.NodeID},
		Env: append([]string{
			"STORAGE_PORT=" + strconv.Itoa(n.Port), "STORAGE_PATH=" + n.DataDir, "NODE_ID=" + n.NodeID,
		}, a.markerEnv(n, entry)...),
		Dir:       n.DataDir,
		HealthURL: supervisor.HealthURL(n.Port),
		PreStart:  a.preStart(entry),
	}
}

// preStart re-verifies a cached binary before every (re)start; a corrupt
// entry is removed and the start fails (the node backs off while the
// reconcile loop fetches it again).
func (a *Agent) preStart(entry cache.Entry) func(context.Context) error {
	return func(ctx context.Context) error {
		if a.fetcher == nil || entry.Version == "" {
			return nil
		}
		e, err := a.fetcher.VerifyCached(ctx, entry.Version)
		if err != nil {
			a.log.Error("cached storage-server failed verification before start; it will be fetched again",
				"version", entry.Version, "err", err)
			a.mu.Lock()
			if a.binary != nil && a.binary.Version == entry.Version {
				a.binary = nil
			}
			a.mu.Unlock()
			a.nudge()
			return fmt.Errorf("verify cached storage-server %s: %w", entry.Version, err)
		}
		if e.Checksum != entry.Checksum {
			return fmt.Errorf("cached storage-server %s changed checksum (%s, node recorded %s)", entry.Version, e.Checksum, entry.Checksum)
		}
		return nil
	}
}

// advertiseHost is the address other machines reach this agent's nodes on:
// loopback when the master is on this machine, else the local address used
// to reach the master.
func advertiseHost(masterHost string) string {
	host, _, err := net.SplitHostPort(masterHost)
	if err != nil {
		host = masterHost
	}
	if host == "localhost" {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return ip.String()
	}
	conn, err := net.Dial("udp", masterHost)
	if err != nil {
		if h, err := os.Hostname(); err == nil {
			return h
		}
		return "127.0.0.1"
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String()
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
