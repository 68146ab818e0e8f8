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
	agentmetrics "github.com/sutragrid/sutra/agent/metrics"
	"github.com/sutragrid/sutra/agent/ratchet"
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
	// MetricsReady, when set, receives the bound address of the metrics
	// endpoint (agent.metrics_addr; tests bind port 0).
	MetricsReady func(net.Addr)
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
//
// Its state has one owner per concern (owners.go); the reconcile loop's
// decisions are pure functions (plan.go); what it acts on sits behind small
// interfaces (seams.go).
type Agent struct {
	opts      Options
	cfg       *config.Config
	log       *slog.Logger
	fetcher   binaryFetcher // nil when storage.binary_path is set
	store     *state.Store
	sup       nodeSupervisor
	cp        controlPlane
	clock     clock
	portFree  func(port int) bool // whether a port can be bound now
	advertise string              // host part of node endpoints

	wake chan struct{}

	// Long operations run as jobs (see job) under jobCtx, which ends with Run.
	jobCtx     context.Context
	cancelJobs context.CancelFunc
	jobs       sync.WaitGroup
	eventsOff  atomic.Bool // set on the way out: late supervisor events no longer touch the record
	recovery   recovery    // boot id, node markers, record recovery (recover.go); set by New

	rec      nodeRecord     // the nodes the agent started, persisted
	failures failureBook    // storage-server checksum -> the node upgrade it failed, persisted
	desired  desiredState   // the master's desired state and the applied generation
	binary   binarySource   // what new nodes start from, its download and the cache pruning
	pending  pendingNodes   // desired node -> why it is not running yet
	stopped  stoppedReports // recently stopped nodes, reported for a while
	notes    upgradeNotes   // node -> outcome of its last upgrade attempt, reported to the master
	refused  binaryRefusal  // why the desired storage-server was refused (signature, rollback), reported
	ratchet  *ratchet.Book  // highest storage-server version a node ran (rollback protection)
	nodeJobs nodeJobs       // node -> its upgrade or stop job
	self     selfUpdateJob  // the agent's self-update

	metrics *agentmetrics.Metrics // its registry and heartbeat summary (agent/metrics)
}

// New prepares an agent from opts without starting anything.
func New(opts Options) (*Agent, error) {
	return newAgent(opts, seams{})
}

// newAgent is New with some parts replaced (tests).
func newAgent(opts Options, with seams) (*Agent, error) {
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
		opts:     opts,
		cfg:      cfg,
		log:      opts.Logger,
		clock:    with.clock,
		portFree: with.portFree,
		wake:     make(chan struct{}, 1),
		pending:  pendingNodes{m: map[string]string{}},
		stopped:  stoppedReports{m: map[string]stoppedNode{}},
		notes:    upgradeNotes{m: map[string]string{}},
		nodeJobs: nodeJobs{upgrades: map[string]*job{}, stopping: map[string]*job{}},
	}
	if a.clock == nil {
		a.clock = systemClock{}
	}
	if a.portFree == nil {
		a.portFree = bindable
	}
	a.jobCtx, a.cancelJobs = context.WithCancel(context.Background())
	var err error
	if a.store, err = state.Open(cfg.Agent.AgentDataDir); err != nil {
		return nil, err
	}
	a.rec = nodeRecord{store: a.store, log: a.log, nodes: map[string]state.Node{}}
	if err := a.loadRecord(); err != nil {
		return nil, err
	}
	a.failures = failureBook{store: a.store, log: a.log, m: a.loadFailures()}
	a.ratchet = ratchet.Open(cfg.Agent.AgentDataDir)
	if cfg.Storage.BinaryPath == "" {
		if !cfg.Agent.AutoDownloadBinary {
			return nil, errors.New("storage.binary_path is empty and agent.auto_download_binary is false: set one of them")
		}
		if with.fetcher != nil {
			a.fetcher = with.fetcher
		} else {
			keys, _, require, err := cfg.Security.EffectiveKeyring(cfg.Agent.AgentDataDir)
			if err != nil {
				return nil, err
			}
			if keys.Len() == 0 {
				a.log.Warn("binaries are not signature-checked: security.release_public_keys is empty")
			}
			f, err := fetch.New(fetch.Options{
				BaseURL:       cfg.Storage.MasterBinaryURL,
				Prefer:        a.binaryURL,
				CacheDir:      cfg.Agent.CacheDir,
				TLSDir:        filepath.Join(cfg.Agent.AgentDataDir, "tls"),
				Logger:        a.log,
				ProgressBar:   opts.ProgressBar,
				Keys:          keys,
				AllowUnsigned: !require,
				Ratchet:       a.ratchet,
				// The [agent] download_rate_limit (issue 14).
				DownloadRateLimit: cfg.Agent.DownloadRate(),
			})
			if err != nil {
				return nil, err
			}
			a.fetcher = realFetcher{f}
		}
	}
	if with.sup != nil {
		a.sup = with.sup
	} else {
		sup, err := supervisor.New(supervisor.Options{
			Logger:    a.log,
			LogDir:    filepath.Join(cfg.Agent.AgentDataDir, "logs"),
			StopGrace: opts.StopGrace,
			Health: supervisor.HealthOptions{
				Interval:  cfg.Monitoring.HealthCheckInterval(),
				Timeout:   cfg.Monitoring.HealthCheckTimeout(),
				Threshold: cfg.Monitoring.UnhealthyThreshold(),
				// a.metrics is set below, before any node runs.
				Observe: func(d time.Duration, err error) { a.metrics.HealthProbe(d, err) },
			},
			Restart: a.restartPolicy(),
			OnEvent: a.onNodeEvent,
		})
		if err != nil {
			return nil, err
		}
		a.sup = realSupervisor{sup}
	}
	if hosts := cfg.Agent.MasterHosts(); len(hosts) > 0 {
		a.advertise = advertiseHost(hosts[0])
	} else {
		a.advertise = advertiseHost(cfg.Agent.MasterHost)
	}
	if a.metrics, err = agentmetrics.New(agentmetrics.Options{
		Version:  version.Version,
		State:    a.metricsSnapshot,
		CacheDir: cfg.Agent.CacheDir,
		CertFile: filepath.Join(cfg.Agent.AgentDataDir, "tls", controlplane.CertFile),
	}); err != nil {
		return nil, err
	}
	if with.cp != nil {
		a.cp = with.cp
		return a, nil
	}
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
		TLSDir:            filepath.Join(cfg.Agent.AgentDataDir, "tls"),
		JoinToken:         cfg.Agent.JoinToken,
		JoinTokenFile:     filepath.Join(cfg.Agent.AgentDataDir, controlplane.JoinTokenFile),
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
		OnHeartbeat:       func() { a.metrics.Heartbeat(nil); a.onHeartbeat() },
		Summary:           a.metrics.Summary,
		OnHeartbeatFailed: a.metrics.Heartbeat,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// metricsSnapshot is the agent's state for agent/metrics.
func (a *Agent) metricsSnapshot() agentmetrics.Snapshot {
	rep := a.report()
	s := agentmetrics.Snapshot{Nodes: make([]agentmetrics.Node, 0, len(rep.Nodes))}
	for _, n := range rep.Nodes {
		s.Nodes = append(s.Nodes, agentmetrics.Node{State: string(n.State), Restarts: n.RestartCount})
	}
	if rep.Upgrade != nil {
		s.UpgradePhase = rep.Upgrade.Phase
	}
	return s
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
	// The control plane fails only when enrollment is refused (a bad token,
	// a master whose CA does not match the token's pin): the agent stops.
	loopCtx, stopLoop := context.WithCancelCause(ctx)
	defer stopLoop(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := a.cp.Run(cpCtx); err != nil {
			stopLoop(err)
		}
	})
	if addr := a.cfg.Agent.MetricsAddr; addr != "" {
		wg.Go(func() {
			if err := a.metrics.Serve(cpCtx, addr, a.log, a.opts.MetricsReady); err != nil {
				stopLoop(err)
			}
		})
	}
	stopJobs := context.AfterFunc(loopCtx, a.cancelJobs)
	defer stopJobs()

	runErr := a.loop(loopCtx)
	if cause := context.Cause(loopCtx); runErr == nil && ctx.Err() == nil && cause != nil {
		runErr = cause
	}
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
		a.rec.clearProcesses()
	} else {
		a.log.Info("leaving nodes running for the next agent to re-adopt", "nodes", len(a.sup.Status()))
		a.sup.Detach()
	}
	a.rec.save()
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
	if a.desired.set(d) {
		a.nudge()
	}
}

func (a *Agent) onHeartbeat() {
	a.stopped.heartbeatDone()
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
	if st, ok := a.sup.NodeStatus(ev.Node); ok && st.Supervised {
		pid, start = st.PID, st.StartTime
	}
	boot := a.recovery.bootID
	changed := a.rec.update(ev.Node, func(n *state.Node) bool {
		if n.PID == pid && n.StartTime == start && (pid == 0 || n.BootID == boot) {
			return false
		}
		n.PID, n.StartTime, n.BootID = pid, start, boot
		return true
	})
	if changed {
		a.rec.save()
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
		PreStart:  a.preStart(n.NodeID, entry),
	}
}

// preStart re-verifies a cached binary before every (re)start of node id.
// A corrupt or missing entry fails the start (the node backs off), and
// that exact version is fetched again at once: once it verifies with the
// checksum the node was started from, the node starts without waiting out
// its backoff — the cache failed, not the node.
func (a *Agent) preStart(id string, entry cache.Entry) func(context.Context) error {
	return func(ctx context.Context) error {
		if a.fetcher == nil || entry.Version == "" {
			return nil
		}
		e, err := a.fetcher.VerifyCached(ctx, entry.Version)
		if err != nil {
			a.log.Error("cached storage-server failed verification before start; it will be fetched again",
				"node", id, "version", entry.Version, "err", err)
			a.binary.drop(entry.Version)
			a.refetchFor(id, entry)
			a.nudge()
			return fmt.Errorf("verify cached storage-server %s: %w", entry.Version, err)
		}
		if e.Checksum != entry.Checksum {
			return fmt.Errorf("cached storage-server %s changed checksum (%s, node recorded %s)", entry.Version, e.Checksum, entry.Checksum)
		}
		return nil
	}
}

// refetchFor fetches entry's version again for node id, whose start found
// it damaged or gone, and restarts the node at once when the fetched
// binary is the one it ran (same checksum). A fetch that fails leaves the
// node to its backoff, whose next start tries again.
func (a *Agent) refetchFor(id string, entry cache.Entry) {
	a.goJob("refetch "+entry.Version+" for "+id, func(ctx context.Context, _ *job) {
		got, err := a.fetcher.Ensure(ctx, entry.Version)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.log.Warn("fetching a damaged cached storage-server again failed; the node retries after its backoff",
				"node", id, "version", entry.Version, "err", err)
			return
		case got.Checksum != entry.Checksum:
			a.log.Warn("storage-server fetched again has another checksum than the node ran; the node waits for the agent's next plan",
				"node", id, "version", entry.Version, "sha256", got.Checksum, "node_sha256", entry.Checksum)
			return
		}
		if !a.sup.Live(id) {
			return // stopped meanwhile
		}
		// Also when the node has not reached its backoff yet (the fetch
		// beat the supervisor): the restart waits for it and cuts it short.
		if err := a.sup.RestartNow(id); err != nil {
			a.log.Warn("restart node after fetching its binary again", "node", id, "err", err)
			return
		}
		a.log.Info("storage-server fetched again; node restarting now", "node", id, "version", entry.Version)
	})
}

// binaryURL is the binary API of the master the agent talks to, which
// downloads try first (fetch.Options.Prefer; config.BinaryURLOf); ""
// when none goes with it.
func (a *Agent) binaryURL() string {
	if m, ok := a.cp.(interface{ Master() string }); ok {
		return a.cfg.BinaryURLOf(m.Master())
	}
	return ""
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
