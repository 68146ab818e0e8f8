// Package fleet is the master's domain: the registered agents, the nodes each
// agent should run (its desired state, versioned by a generation number), the
// node status each agent last reported, agent liveness, node placement, the
// cluster summary and the bounded event log. It knows nothing of gRPC or HTTP;
// adapters (grpcapi, fleetapi) translate.
//
// State lives in memory, guarded by one mutex, and every acknowledged mutation
// is committed to the Store before the call returns. Writes are group-committed
// in the order they were made, so concurrent calls share fsyncs without ever
// reordering two writes of the same record. Liveness is deliberately not
// persisted on each heartbeat: a heartbeat that changes nothing durable (the
// common case) touches memory only, so a fleet of 10,000 agents heartbeating
// every 5 s costs no disk writes. After a restart a master alone on its
// store loads every agent as offline with the last persisted heartbeat
// time, and each becomes healthy again on its next heartbeat.
//
// Several masters on one store (etcd; issue 16). Memory follows the store
// and no write loses another master's:
//
//   - Every record in memory (agent, node, revocation, version defaults)
//     remembers the store revision it was read or written at, and every
//     write is conditioned on it (store.ApplyIf with IfRevision; IfAbsent
//     for a new record and for each event's sequence key). Trimming the
//     event log deletes blindly (idempotent). The committer still groups
//     the mutations of concurrent calls into one ApplyIf; when a batch
//     fails on a condition it commits its mutations one by one to find the
//     losers. A mutation writing a record that an earlier mutation of this
//     master has in flight is conditioned on that one's commit revision
//     (dropped inside one batch), and fails if it failed; an event's
//     mutation depends on the previous event's likewise, so events commit
//     in sequence order. Options.MaxBatchOps bounds a batch's distinct
//     keys (etcd's --max-txn-ops); batches are split between mutations,
//     never inside one.
//   - A mutation that lost marks its records dirty (its next write fails
//     before it is sent), reads them again from the store (Get, applied by
//     the function Follow uses) and the public method runs again on the new
//     state, at most 8 times with a little jitter; then the caller gets an
//     ErrUnavailable error saying the fleet changed under the request.
//   - Follow watches every table the fleet reads from the revision of the
//     load, and applies each change unless memory holds the record at that
//     revision or later, or has a write of it in flight (that write's
//     outcome decides; a change skipped that way and newer than the write
//     makes the record be read again). Tables are watched separately, so
//     a node may arrive before its agent: it waits among the orphans. When
//     the store no longer keeps the history (ErrCompacted), the tables are
//     loaded again, keeping the liveness this master tracks. Records loaded
//     by Scan carry no revision: the committer reads it on their first
//     write and accepts it if not after the load revision. Watchers of
//     events (Watch) get events once committed, in sequence order, from
//     every master.
//   - Liveness is tracked in the memory of the master that receives an
//     agent's heartbeats (agentRec.Master, written when it changes, with
//     the agent's health and last-seen time when the health changes). Each
//     master sweeps its own agents; other masters show what was written.
//     The leader (Options.Coordinator) also sweeps the agents of masters
//     that are not alive, their clock starting when it first saw their
//     master dead, so agents that reconnect elsewhere within seconds are
//     never declared offline; it alone removes agents (GC). Its writes
//     carry the Coordinator's fence. Another master's agent shows the
//     last-seen time written with its last change, not its last
//     heartbeat. A master that restarts counts its own agents' silence
//     from its load. One master alone (cluster.Single, the default) does
//     not follow the store: nobody else writes it.
//
// A mutation's writes must fit one store batch: on etcd an agent whose
// report changes more nodes than about half of --max-txn-ops in one
// heartbeat fails with ErrUnavailable; raise --max-txn-ops for agents with
// hundreds of nodes.
//
// If a commit fails, the call returns an ErrUnavailable error and the
// in-memory state may be ahead of the store until the record is written
// again or read again.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/store"
)

// Clock tells the time; tests inject a fake one.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Defaults of Options.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultDegradedAfter     = 15 * time.Second
	DefaultOfflineAfter      = 30 * time.Second
	DefaultEventLogSize      = 10000
	DefaultMaxAgents         = 20000
	DefaultMaxNodes          = 100000
	DefaultMaxWatchers       = 64
	DefaultAgentGCThreshold  = 24 * time.Hour
)

// Options configure a Fleet. Only Store is required.
type Options struct {
	// Store persists the fleet (required).
	Store store.Store
	// Clock defaults to the wall clock.
	Clock Clock
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
	// HeartbeatInterval is the interval agents are told to heartbeat at (default 5 s).
	HeartbeatInterval time.Duration
	// DegradedAfter without a heartbeat makes an agent degraded (default 15 s).
	DegradedAfter time.Duration
	// OfflineAfter without a heartbeat makes an agent offline (default 30 s).
	OfflineAfter time.Duration
	// SweepInterval is how often Run checks liveness (default: a third of the
	// shortest liveness step, capped at 1 s, so no state is ever skipped).
	SweepInterval time.Duration
	// EventLogSize bounds the persisted event log (default 10,000 events).
	EventLogSize int
	// AgentGCThreshold: an offline agent whose last heartbeat is older is
	// removed with its node records (event AgentRemoved), like Nomad's
	// node_gc_threshold. It must be longer than OfflineAfter. Zero means
	// DefaultAgentGCThreshold (24 h); negative disables removal. The time
	// counts from the later of the agent's last heartbeat and the fleet's
	// start, so a master restart never removes agents at once.
	AgentGCThreshold time.Duration
	// MaxAgents caps the registered agents; a new agent beyond it is refused
	// with ErrExhausted (default DefaultMaxAgents, 20,000).
	MaxAgents int
	// MaxNodes caps the node records of the whole fleet (default
	// DefaultMaxNodes, 100,000); one agent holds at most
	// limits.MaxNodesPerAgent.
	MaxNodes int
	// MaxWatchers caps concurrent following event watchers; one more is
	// refused with ErrExhausted (default DefaultMaxWatchers, 64). Each
	// buffers up to WatchOptions.Buffer events.
	MaxWatchers int
	// MasterVersion is reported to agents and in the cluster status.
	MasterVersion string
	// Coordinator is this master's view of the other masters sharing the
	// store (nil: cluster.NewSingle with ID "local", alone on its store).
	// Only the leader runs the singletons (the liveness sweep of agents
	// whose master died, agent GC), their writes fenced.
	Coordinator cluster.Coordinator
	// MaxBatchOps bounds the distinct keys one group commit writes (and
	// conditions); 0: unbounded (bbolt). Batches are split between
	// mutations only; one mutation larger than this fails. The etcd
	// backend's default --max-txn-ops is 128.
	MaxBatchOps int
}

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Store == nil {
		errs = append(errs, errors.New("fleet options: Store is required"))
	}
	if o.HeartbeatInterval < 0 || o.DegradedAfter < 0 || o.OfflineAfter < 0 || o.SweepInterval < 0 || o.EventLogSize < 0 ||
		o.MaxAgents < 0 || o.MaxNodes < 0 || o.MaxWatchers < 0 || o.MaxBatchOps < 0 {
		errs = append(errs, errors.New("fleet options: durations and sizes must not be negative"))
	}
	if o.HeartbeatInterval > 0 && o.HeartbeatInterval < time.Second {
		errs = append(errs, fmt.Errorf("fleet options: heartbeat interval %s is below 1s (agents are told whole seconds)", o.HeartbeatInterval))
	}
	d, off := o.DegradedAfter, o.OfflineAfter
	if d == 0 {
		d = DefaultDegradedAfter
	}
	if off == 0 {
		off = DefaultOfflineAfter
	}
	if off <= d {
		errs = append(errs, fmt.Errorf("fleet options: offline-after %s must be longer than degraded-after %s", off, d))
	}
	if o.AgentGCThreshold > 0 && o.AgentGCThreshold <= off {
		errs = append(errs, fmt.Errorf("fleet options: agent GC threshold %s must be longer than offline-after %s", o.AgentGCThreshold, off))
	}
	return errors.Join(errs...)
}

// Fleet is the master's fleet state. Its methods are safe for concurrent use.
type Fleet struct {
	opts  Options
	clock Clock
	log   *slog.Logger
	st    store.Store
	com   *committer

	// self is this master's id (Coordinator.Self().ID).
	self  string
	coord cluster.Coordinator
	fol   follower

	mu     sync.RWMutex
	agents map[string]*agentState
	nodes  map[string]*Node // every node record, by id
	// orphans are node records whose agent record has not arrived yet
	// (Follow watches each table on its own).
	orphans     map[string]*Node
	defaults    versionDefaults
	defaultsRev store.Revision
	// loadRev is the store revision the tables were loaded at.
	loadRev store.Revision
	// inflight is, by record (keyRef.id), the last txn of this master
	// writing it that has not finished; lastEventTicket the last one
	// writing an event.
	inflight        map[string]*ticket
	lastEventTicket *ticket
	// skipped: the newest revision of a record the watch skipped while a
	// write of it was in flight.
	skipped map[string]store.Revision
	// deliveredSeq is the newest event handed to watchers.
	deliveredSeq uint64
	// deadSince is when the leader first saw each dead master dead.
	deadSince map[string]time.Time
	events    []Event // ring of the last EventLogSize events, oldest first
	lastSeq   uint64
	subs      map[*subscriber]struct{}
	// revoked is the agent certificate denylist (revoke.go).
	revoked map[string]*Revocation
	// started is when this fleet was loaded: offline time for the agent GC
	// counts from it at the earliest.
	started time.Time
}

type agentState struct {
	rec    agentRec
	health Health
	// lastSeen is the last heartbeat or registration; in memory only
	// (for agents of another master, its persisted LastSeen).
	lastSeen time.Time
	nodes    map[string]*Node
}

// agentRec is the persisted part of an agent.
type agentRec struct {
	ID                   string            `json:"id"`
	Hostname             string            `json:"hostname"`
	Platform             string            `json:"platform"`
	Arch                 string            `json:"arch"`
	AgentVersion         string            `json:"agent_version"`
	MaxStorageNodes      uint32            `json:"max_storage_nodes"`
	Labels               map[string]string `json:"labels,omitempty"`
	RegisteredAt         time.Time         `json:"registered_at"`
	InstanceID           string            `json:"instance_id,omitempty"`
	LastSeen             time.Time         `json:"last_seen,omitzero"`
	Generation           uint64            `json:"generation"`
	AppliedGeneration    uint64            `json:"applied_generation"`
	StorageServerVersion string            `json:"storage_server_version"`
	DesiredAgentVersion  string            `json:"desired_agent_version,omitempty"`
	Upgrade              *UpgradeStatus    `json:"upgrade,omitempty"`
	// Pins: artifact name -> the version the agent is pinned to (pin.go).
	Pins map[string]string `json:"pins,omitempty"`
	// Master is the id of the master that last accepted its registration
	// or heartbeat, written when it changes; that master tracks its
	// liveness in memory.
	Master string `json:"master,omitempty"`
	// Health is the agent's health as its master last wrote it (on
	// changes only).
	Health Health `json:"health,omitempty"`

	// rev is the store revision the record was read or written at.
	rev store.Revision
}

type versionDefaults struct {
	StorageServerVersion string `json:"storage_server_version"`
	AgentVersion         string `json:"agent_version,omitempty"`
}

var metaDefaultsKey = []byte("version_defaults")

// New loads the fleet from opts.Store.
func New(ctx context.Context, opts Options) (*Fleet, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opts.DegradedAfter == 0 {
		opts.DegradedAfter = DefaultDegradedAfter
	}
	if opts.OfflineAfter == 0 {
		opts.OfflineAfter = DefaultOfflineAfter
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = min(opts.DegradedAfter, opts.OfflineAfter-opts.DegradedAfter) / 3
		opts.SweepInterval = min(max(opts.SweepInterval, 10*time.Millisecond), time.Second)
	}
	if opts.EventLogSize == 0 {
		opts.EventLogSize = DefaultEventLogSize
	}
	if opts.AgentGCThreshold == 0 {
		opts.AgentGCThreshold = DefaultAgentGCThreshold
	}
	if opts.MaxAgents == 0 {
		opts.MaxAgents = DefaultMaxAgents
	}
	if opts.MaxNodes == 0 {
		opts.MaxNodes = DefaultMaxNodes
	}
	if opts.MaxWatchers == 0 {
		opts.MaxWatchers = DefaultMaxWatchers
	}
	if opts.MasterVersion == "" {
		opts.MasterVersion = "0.0.0-dev"
	}
	if opts.Coordinator == nil {
		opts.Coordinator = cluster.NewSingle(cluster.Member{ID: "local", Version: opts.MasterVersion})
	}
	f := &Fleet{
		opts:    opts,
		clock:   opts.Clock,
		log:     opts.Logger,
		st:      opts.Store,
		coord:   opts.Coordinator,
		self:    opts.Coordinator.Self().ID,
		subs:    map[*subscriber]struct{}{},
		started: opts.Clock.Now(),
	}
	f.com = newCommitter(opts.Store, opts.MaxBatchOps, f.finished)
	f.initMaps()
	if err := f.load(ctx, true); err != nil {
		return nil, err
	}
	f.deliveredSeq = f.lastSeq
	return f, nil
}

func (f *Fleet) initMaps() {
	f.agents, f.nodes, f.orphans = map[string]*agentState{}, map[string]*Node{}, map[string]*Node{}
	f.defaults = versionDefaults{StorageServerVersion: "latest"}
	f.inflight, f.skipped = map[string]*ticket{}, map[string]store.Revision{}
	f.deadSince = map[string]time.Time{}
}

// load reads the tables; with drop it deletes node records without an
// agent and events beyond the log's size (the first load).
func (f *Fleet) load(ctx context.Context, drop bool) error {
	rev, err := f.st.Revision(ctx)
	if err != nil {
		return fmt.Errorf("load fleet: %w", err)
	}
	f.loadRev, f.defaultsRev = rev, 0
	err = f.st.Scan(ctx, store.TableMeta, func(k, v []byte) error {
		if string(k) == string(metaDefaultsKey) {
			f.defaultsRev = revUnknown
			if err := json.Unmarshal(v, &f.defaults); err != nil {
				return fmt.Errorf("decode version defaults: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load fleet: %w", err)
	}
	err = f.st.Scan(ctx, store.TableAgents, func(k, v []byte) error {
		var r agentRec
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode agent %s: %w", k, err)
		}
		r.rev = revUnknown
		// Alone, a master loads every agent offline until its next
		// heartbeat. With other masters, each agent shows what its master
		// wrote; this master's own agents (it restarted) count their
		// silence from this load, and the sweep writes them degraded and
		// offline as they stay away (the others see it).
		a := &agentState{rec: r, health: Offline, lastSeen: r.LastSeen, nodes: map[string]*Node{}}
		if _, alone := f.coord.(*cluster.Single); !alone {
			a.health = r.persistedHealth()
			if r.Master == f.self && a.health != Offline {
				a.lastSeen = later(r.LastSeen, f.started)
			}
		}
		f.agents[r.ID] = a
		return nil
	})
	if err != nil {
		return fmt.Errorf("load fleet: %w", err)
	}
	var orphans []store.Op
	err = f.st.Scan(ctx, store.TableNodes, func(k, v []byte) error {
		var n Node
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("decode node %s: %w", k, err)
		}
		n.rev = revUnknown
		a := f.agents[n.AgentID]
		if a == nil {
			// Alone, a node without its agent is a leftover; with other
			// masters its agent may have been written after the agents'
			// scan: it waits for the agent's record (Follow).
			if _, alone := f.coord.(*cluster.Single); drop && alone {
				orphans = append(orphans, store.Delete(store.TableNodes, []byte(n.ID)))
			} else {
				f.orphans[n.ID] = &n
			}
			return nil
		}
		f.nodes[n.ID] = &n
		a.nodes[n.ID] = &n
		return nil
	})
	if err != nil {
		return fmt.Errorf("load fleet: %w", err)
	}
	err = f.st.Scan(ctx, store.TableEvents, func(k, v []byte) error {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode event %x: %w", k, err)
		}
		f.events = append(f.events, e)
		f.lastSeq = max(f.lastSeq, e.Seq)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load fleet: %w", err)
	}
	if err := f.loadRevoked(ctx); err != nil {
		return fmt.Errorf("load fleet: %w", err)
	}
	if over := len(f.events) - f.opts.EventLogSize; over > 0 {
		for _, e := range f.events[:over] {
			if !drop {
				break
			}
			orphans = append(orphans, store.Delete(store.TableEvents, seqKey(e.Seq)))
		}
		f.events = append([]Event(nil), f.events[over:]...)
	}
	if len(orphans) > 0 {
		if err := f.st.Apply(ctx, orphans); err != nil {
			return fmt.Errorf("load fleet: drop stale records: %w", err)
		}
	}
	f.log.Info("fleet loaded", "revision", f.loadRev, "agents", len(f.agents), "nodes", len(f.nodes), "events", len(f.events), "last_seq", f.lastSeq)
	return nil
}

// HeartbeatInterval is the interval agents are told to heartbeat at.
func (f *Fleet) HeartbeatInterval() time.Duration { return f.opts.HeartbeatInterval }

// MasterVersion is the version reported to agents.
func (f *Fleet) MasterVersion() string { return f.opts.MasterVersion }

// Run sweeps agent liveness until ctx is done; it returns nil on
// cancellation. A fleet sharing its store with other masters (a
// Coordinator other than cluster.Single) follows the store meanwhile.
func (f *Fleet) Run(ctx context.Context) error {
	if _, alone := f.coord.(*cluster.Single); !alone {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = f.Follow(ctx) }()
		defer func() { cancel(); <-done }()
	}
	t := time.NewTicker(f.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := f.Sweep(ctx); err != nil && !errors.Is(err, context.Canceled) {
				f.log.Error("liveness sweep", "err", err)
			}
		}
	}
}

// maxGCPerSweep bounds how many agents one sweep removes, so that one
// commit stays small; the rest go in the next sweeps.
const maxGCPerSweep = 1000

// Sweep moves agents that missed heartbeats to degraded and offline, one
// step at a time, so that an agent never goes offline without an
// AgentDegraded event first; then it removes agents offline for longer than
// the GC threshold. Each master sweeps the agents whose heartbeats it
// receives (agentRec.Master); the leader also sweeps those of masters that
// are not alive, their clock starting when it first saw their master dead
// (they reconnect elsewhere within seconds), and alone removes agents.
// Each agent's change is its own write; one lost to another master's write
// is read again and redone by the next sweep.
func (f *Fleet) Sweep(ctx context.Context) error {
	now := f.clock.Now()
	var fence []store.Cond
	lead := false
	if f.coord.Leading() {
		fence, lead = f.coord.Fence()
	}
	f.mu.Lock()
	dead := map[string]bool{}
	for _, a := range f.agents {
		if m := a.rec.Master; m != "" && m != f.self {
			if _, ok := dead[m]; !ok {
				dead[m] = !f.coord.Alive(m)
			}
		}
	}
	// The clock of a dead master's agents starts when this master, leading,
	// first saw it dead.
	for m := range f.deadSince {
		if !dead[m] || !lead {
			delete(f.deadSince, m)
		}
	}
	for m, d := range dead {
		if d && lead && f.deadSince[m].IsZero() {
			f.deadSince[m] = now
			f.log.Warn("master is not alive: its agents are swept by this leader from now", "master", m)
		}
	}
	var ts []*ticket
	removed := 0
	for _, a := range f.agents {
		seen := a.lastSeen
		var fc []store.Cond
		mine := true
		switch m := a.rec.Master; {
		case m == f.self || m == "":
		case lead && dead[m]:
			seen, fc = later(seen, f.deadSince[m]), fence
		default:
			// Another master tracks it; the leader only collects it once
			// that master wrote it offline.
			mine = false
		}
		if !mine && !(lead && a.health == Offline) {
			continue
		}
		tx := txn{fence: fc}
		since := now.Sub(seen)
		if !mine {
			since = 0
		}
		if a.health == Healthy && since >= f.opts.DegradedAfter {
			a.health = Degraded
			f.emit(&tx, now, EventAgentDegraded, a.rec.ID, "", fmt.Sprintf("no heartbeat for %s", since.Round(time.Second)))
			f.log.Warn("agent degraded", "agent", a.rec.ID, "since_heartbeat", since.Round(time.Second), "master", a.rec.Master)
		}
		if a.health == Degraded && since >= f.opts.OfflineAfter {
			a.health = Offline
			f.emit(&tx, now, EventAgentOffline, a.rec.ID, "", fmt.Sprintf("no heartbeat for %s", since.Round(time.Second)))
			f.log.Warn("agent offline", "agent", a.rec.ID, "since_heartbeat", since.Round(time.Second), "master", a.rec.Master)
		}
		if len(tx.ops) > 0 {
			a.rec.Health, a.rec.LastSeen = a.health, a.lastSeen
			tx.putAgent(&a.rec)
		}
		if a.health == Offline && lead && f.opts.AgentGCThreshold > 0 && removed < maxGCPerSweep {
			// Offline time counts from this fleet's start at the earliest: a
			// restart loads every agent offline with an old last-seen time.
			off := now.Sub(later(seen, f.started))
			if off >= f.opts.AgentGCThreshold {
				removed++
				tx.fence = fence
				f.removeLocked(&tx, now, a, EventAgentRemoved, fmt.Sprintf("offline, no heartbeat for %s (agent GC threshold %s): removed with %d node records", off.Round(time.Second), f.opts.AgentGCThreshold, len(a.nodes)))
				f.log.Info("agent removed", "agent", a.rec.ID, "since_heartbeat", off.Round(time.Second), "gc_threshold", f.opts.AgentGCThreshold)
			}
		}
		if t := f.enqueue(&tx); t != nil {
			ts = append(ts, t)
		}
	}
	f.mu.Unlock()
	var errs []error
	for _, t := range ts {
		err := f.wait(ctx, t)
		if errors.Is(err, store.ErrConflict) {
			f.reconcileTicket(ctx, t)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
