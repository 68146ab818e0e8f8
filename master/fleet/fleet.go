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
// every 5 s costs no disk writes. After a master restart every agent is loaded
// as offline with the last persisted heartbeat time, and becomes healthy again
// on its next heartbeat.
//
// If a commit fails, the call returns an ErrUnavailable error and the
// in-memory state may be ahead of the disk until the record is written again.
package fleet

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
}

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Store == nil {
		errs = append(errs, errors.New("fleet options: Store is required"))
	}
	if o.HeartbeatInterval < 0 || o.DegradedAfter < 0 || o.OfflineAfter < 0 || o.SweepInterval < 0 || o.EventLogSize < 0 ||
		o.MaxAgents < 0 || o.MaxNodes < 0 || o.MaxWatchers < 0 {
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

	mu       sync.RWMutex
	agents   map[string]*agentState
	nodes    map[string]*Node // every node record, by id
	defaults versionDefaults
	events   []Event // ring of the last EventLogSize events, oldest first
	lastSeq  uint64
	subs     map[*subscriber]struct{}
	// revoked is the agent certificate denylist (revoke.go).
	revoked map[string]*Revocation
	// started is when this fleet was loaded: offline time for the agent GC
	// counts from it at the earliest.
	started time.Time
}

type agentState struct {
	rec    agentRec
	health Health
	// lastSeen is the last heartbeat or registration; in memory only.
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
	f := &Fleet{
		opts:     opts,
		clock:    opts.Clock,
		log:      opts.Logger,
		st:       opts.Store,
		com:      newCommitter(opts.Store),
		agents:   map[string]*agentState{},
		nodes:    map[string]*Node{},
		defaults: versionDefaults{StorageServerVersion: "latest"},
		subs:     map[*subscriber]struct{}{},
		started:  opts.Clock.Now(),
	}
	if err := f.load(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fleet) load(ctx context.Context) error {
	err := f.st.Scan(ctx, store.TableMeta, func(k, v []byte) error {
		if string(k) == string(metaDefaultsKey) {
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
		f.agents[r.ID] = &agentState{rec: r, health: Offline, lastSeen: r.LastSeen, nodes: map[string]*Node{}}
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
		a := f.agents[n.AgentID]
		if a == nil {
			orphans = append(orphans, store.Delete(store.TableNodes, []byte(n.ID)))
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
			orphans = append(orphans, store.Delete(store.TableEvents, seqKey(e.Seq)))
		}
		f.events = append([]Event(nil), f.events[over:]...)
	}
	if len(orphans) > 0 {
		if err := f.st.Apply(ctx, orphans); err != nil {
			return fmt.Errorf("load fleet: drop stale records: %w", err)
		}
	}
	f.log.Info("fleet loaded", "agents", len(f.agents), "nodes", len(f.nodes), "events", len(f.events), "last_seq", f.lastSeq)
	return nil
}

// HeartbeatInterval is the interval agents are told to heartbeat at.
func (f *Fleet) HeartbeatInterval() time.Duration { return f.opts.HeartbeatInterval }

// MasterVersion is the version reported to agents.
func (f *Fleet) MasterVersion() string { return f.opts.MasterVersion }

// Run sweeps agent liveness until ctx is done; it returns nil on cancellation.
func (f *Fleet) Run(ctx context.Context) error {
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
// the GC threshold.
func (f *Fleet) Sweep(ctx context.Context) error {
	now := f.clock.Now()
	f.mu.Lock()
	var tx txn
	removed := 0
	for _, a := range f.agents {
		since := now.Sub(a.lastSeen)
		if a.health == Healthy && since >= f.opts.DegradedAfter {
			a.health = Degraded
			f.emit(&tx, now, EventAgentDegraded, a.rec.ID, "", fmt.Sprintf("no heartbeat for %s", since.Round(time.Second)))
			f.log.Warn("agent degraded", "agent", a.rec.ID, "since_heartbeat", since.Round(time.Second))
		}
		if a.health == Degraded && since >= f.opts.OfflineAfter {
			a.health = Offline
			f.emit(&tx, now, EventAgentOffline, a.rec.ID, "", fmt.Sprintf("no heartbeat for %s", since.Round(time.Second)))
			f.log.Warn("agent offline", "agent", a.rec.ID, "since_heartbeat", since.Round(time.Second))
		}
		if a.health == Offline && f.opts.AgentGCThreshold > 0 && removed < maxGCPerSweep {
			// Offline time counts from this fleet's start at the earliest: a
			// restart loads every agent offline with an old last-seen time.
			off := now.Sub(later(a.lastSeen, f.started))
			if off >= f.opts.AgentGCThreshold {
				removed++
				f.removeLocked(&tx, now, a, EventAgentRemoved, fmt.Sprintf("offline, no heartbeat for %s (agent GC threshold %s): removed with %d node records", off.Round(time.Second), f.opts.AgentGCThreshold, len(a.nodes)))
				f.log.Info("agent removed", "agent", a.rec.ID, "since_heartbeat", off.Round(time.Second), "gc_threshold", f.opts.AgentGCThreshold)
			}
		}
	}
	t := f.enqueue(&tx)
	f.mu.Unlock()
	return f.wait(ctx, t)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// txn collects the store writes of one mutation. A record that cannot be
// encoded (validation at the boundary makes this a bug, such as a time
// outside JSON's four-digit years) is left out and remembered in err, which
// the caller gets back from wait: never a panic.
type txn struct {
	ops []store.Op
	err error
	// actor is who caused the mutation (master/actor); empty: the master.
	actor string
}

// put encodes v as JSON and adds it to the batch.
func (tx *txn) put(table string, key []byte, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		if tx.err == nil {
			tx.err = fmt.Errorf("encode %s record %q: %w", table, key, err)
		}
		return
	}
	tx.ops = append(tx.ops, store.Put(table, key, b))
}

func (tx *txn) putAgent(r *agentRec) { tx.put(store.TableAgents, []byte(r.ID), r) }

func (tx *txn) putNode(n *Node) { tx.put(store.TableNodes, []byte(n.ID), n) }

func (tx *txn) deleteNode(id string) {
	tx.ops = append(tx.ops, store.Delete(store.TableNodes, []byte(id)))
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// enqueue hands tx to the committer; the caller holds f.mu, which keeps the
// commit order equal to the order of the in-memory changes. If a record of
// tx could not be encoded, the others are still committed and the returned
// ticket carries the encoding error.
func (f *Fleet) enqueue(tx *txn) *ticket {
	var t *ticket
	if len(tx.ops) > 0 {
		t = f.com.enqueue(tx.ops)
	}
	if tx.err == nil {
		return t
	}
	return &ticket{done: closed, err: &Error{Kind: KindInternal, Msg: "the master could not encode the change (a bug: please report it with the master's log)", Err: tx.err}, after: t}
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wait blocks until t is durable (nil t: nothing to write).
func (f *Fleet) wait(ctx context.Context, t *ticket) error {
	if t == nil {
		return nil
	}
	if t.after != nil {
		_ = f.wait(ctx, t.after)
	}
	select {
	case <-t.done:
		if fe, ok := t.err.(*Error); ok {
			f.log.Error("fleet change not saved", "err", fe)
			return fe
		}
		if t.err != nil {
			f.log.Error("commit fleet state", "err", t.err)
			return &Error{Kind: KindUnavailable, Msg: "the master could not save the change (check its disk and log), then retry", Err: t.err}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// committer group-commits batches of ops in enqueue order: while one batch
// is being written, later ops accumulate and go out together in the next.
type committer struct {
	st      store.Store
	mu      sync.Mutex
	pending []store.Op
	cur     *ticket
	running bool
}

type ticket struct {
	done chan struct{}
	err  error
	// after is the commit of the records that were encoded, waited for
	// before err is returned.
	after *ticket
}

func newCommitter(st store.Store) *committer {
	return &committer{st: st, cur: &ticket{done: make(chan struct{})}}
}

func (c *committer) enqueue(ops []store.Op) *ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, ops...)
	t := c.cur
	if !c.running {
		c.running = true
		go c.drain()
	}
	return t
}

func (c *committer) drain() {
	for {
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		ops, t := c.pending, c.cur
		c.pending, c.cur = nil, &ticket{done: make(chan struct{})}
		c.mu.Unlock()
		// The write must happen even if the caller gave up waiting.
		t.err = c.st.Apply(context.Background(), ops)
		close(t.done)
	}
}
