package agent

import (
	"log/slog"
	"sync"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/state"
)

// The agent's state, one owner per concern: each small type below guards
// its own fields with its own lock and is never locked while another is
// (no lock order to get wrong), so that a slow holder of one concern (a
// record write) delays no other.

// nodeRecord is the record of the nodes the agent started, and its file.
type nodeRecord struct {
	store *state.Store
	log   *slog.Logger

	saveMu sync.Mutex // one writer at a time: an older snapshot never overwrites a newer one
	mu     sync.Mutex
	nodes  map[string]state.Node
}

func (r *nodeRecord) get(id string) (state.Node, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[id]
	return n, ok
}

func (r *nodeRecord) put(n state.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes[n.NodeID] = n
}

// remove drops node id and reports whether it was recorded.
func (r *nodeRecord) remove(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.nodes[id]
	delete(r.nodes, id)
	return ok
}

// update applies fn to node id when it is recorded; fn reports a change.
func (r *nodeRecord) update(id string, fn func(n *state.Node) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[id]
	if !ok || !fn(&n) {
		return false
	}
	r.nodes[id] = n
	return true
}

// clearProcesses forgets every node's process (they were stopped).
func (r *nodeRecord) clearProcesses() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.nodes {
		n.PID, n.StartTime = 0, 0
		r.nodes[id] = n
	}
}

func (r *nodeRecord) snapshot() map[string]state.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]state.Node, len(r.nodes))
	for k, v := range r.nodes {
		out[k] = v
	}
	return out
}

func (r *nodeRecord) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.nodes)
}

// usedPorts is the set of ports recorded nodes hold.
func (r *nodeRecord) usedPorts() map[int]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	used := map[int]bool{}
	for _, p := range (state.Record{Nodes: r.nodes}).UsedPorts() {
		used[p] = true
	}
	return used
}

// save writes the record durably.
func (r *nodeRecord) save() {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	if err := r.store.Save(state.Record{Nodes: r.snapshot()}); err != nil {
		r.log.Error("save node record", "err", err)
	}
}

// failureBook is the persisted record of storage-server binaries that failed
// a node upgrade here (by checksum).
type failureBook struct {
	store *state.Store
	log   *slog.Logger

	saveMu sync.Mutex
	mu     sync.Mutex
	m      state.Failures
}

func (b *failureBook) failed(checksum string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[checksum]
	return ok
}

func (b *failureBook) record(f state.Failure) {
	b.mu.Lock()
	b.m[f.Checksum] = f
	b.mu.Unlock()
	b.save()
}

// supersede marks the failures the desired version want no longer names.
func (b *failureBook) supersede(want string) {
	b.mu.Lock()
	changed := supersede(b.m, want)
	b.mu.Unlock()
	if changed {
		b.save()
	}
}

// check reports whether checksum may be used at desired generation gen (see
// failureVerdict), forgetting a failure that gets its one new attempt.
func (b *failureBook) check(checksum string, gen uint64, masterAnswered bool) (f state.Failure, usable, retried bool) {
	b.mu.Lock()
	f, failed := b.m[checksum]
	usable, retried = failureVerdict(f, failed, gen, masterAnswered)
	if retried {
		delete(b.m, checksum)
	}
	b.mu.Unlock()
	if retried {
		b.save()
	}
	return f, usable, retried
}

func (b *failureBook) save() {
	b.saveMu.Lock()
	defer b.saveMu.Unlock()
	b.mu.Lock()
	cp := make(state.Failures, len(b.m))
	for k, v := range b.m {
		cp[k] = v
	}
	b.mu.Unlock()
	if err := b.store.SaveFailures(cp); err != nil {
		b.log.Error("save failed-upgrade record", "err", err)
	}
}

// desiredState is the master's latest desired state and the generation the
// agent applied.
type desiredState struct {
	mu      sync.Mutex
	d       *controlplane.Desired
	applied uint64
}

// set stores d and reports whether its generation is new.
func (s *desiredState) set(d controlplane.Desired) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.d == nil || s.d.Generation != d.Generation
	s.d = &d
	return changed
}

// get is the desired state (nil: the master has not answered since start).
func (s *desiredState) get() *controlplane.Desired {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.d
}

// names reports whether the desired state names node id; before the master
// answered, every node does (the agent keeps what it recorded).
func (s *desiredState) names(id string) bool {
	d := s.get()
	if d == nil {
		return true
	}
	for _, n := range d.Nodes {
		if n.NodeID == id {
			return true
		}
	}
	return false
}

func (s *desiredState) setApplied(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = gen
}

func (s *desiredState) appliedGeneration() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// binarySource is the storage-server binary new nodes start from, the job
// that resolves it and the job that prunes the cache (both use the cache,
// never at once).
type binarySource struct {
	mu      sync.Mutex
	entry   *cache.Entry
	version string // the desired version entry was resolved for ("latest" or exact)
	gen     uint64 // the generation entry was resolved at
	fetch   *job
	prune   *job

	// A failed resolution of failVersion is tried again only from retryAt
	// on (failures in a row double the wait, up to maxFetchRetryWait), so
	// that a refused signature or an unreachable master is not asked again
	// at every reconcile.
	failVersion string
	failures    int
	retryAt     time.Time
}

// Waits between failed resolutions of one version.
const (
	minFetchRetryWait = 2 * time.Second
	maxFetchRetryWait = time.Minute
)

// waiting reports whether version failed lately and its retry time is not
// reached. Callers hold s.mu.
func (s *binarySource) waiting(version string, now time.Time) bool {
	return s.failVersion == version && now.Before(s.retryAt)
}

// failed records a failed resolution of version at now and returns the
// wait before the next try.
func (s *binarySource) failed(version string, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failVersion != version {
		s.failVersion, s.failures = version, 0
	}
	s.failures++
	wait := maxFetchRetryWait
	if s.failures < 8 {
		wait = min(minFetchRetryWait<<(s.failures-1), maxFetchRetryWait)
	}
	s.retryAt = now.Add(wait)
	return wait
}

// succeeded forgets the failures.
func (s *binarySource) succeeded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failVersion, s.failures, s.retryAt = "", 0, time.Time{}
}

func (s *binarySource) current() *cache.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entry
}

// useMeanwhile sets e unless a binary is set, or j is no longer the
// resolving job; it reports whether it did.
func (s *binarySource) useMeanwhile(j *job, e cache.Entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fetch != j || s.entry != nil {
		return false
	}
	s.entry = &e
	return true
}

// publish sets what job j resolved for version at gen, unless j is no
// longer the resolving job; it reports whether it did.
func (s *binarySource) publish(j *job, e *cache.Entry, version string, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fetch != j {
		return false
	}
	s.entry, s.version, s.gen = e, version, gen
	return true
}

// fallBack has new nodes start from e (the version that works).
func (s *binarySource) fallBack(e cache.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry = &e
}

// drop forgets the binary when it is version (it failed verification).
func (s *binarySource) drop(version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entry != nil && s.entry.Version == version {
		s.entry = nil
	}
}

// pendingNodes is the desired nodes not running yet, with the reason.
type pendingNodes struct {
	mu sync.Mutex
	m  map[string]string
}

// set records why node id is not running ("" = it runs).
func (p *pendingNodes) set(id, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if why == "" {
		delete(p.m, id)
		return
	}
	p.m[id] = why
}

// take removes node id and returns its reason.
func (p *pendingNodes) take(id string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	why, ok := p.m[id]
	delete(p.m, id)
	return why, ok
}

func (p *pendingNodes) snapshot() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.m))
	for k, v := range p.m {
		out[k] = v
	}
	return out
}

// upgradeNotes is the outcome of each node's last upgrade attempt (or its
// re-adoption), reported to the master.
type upgradeNotes struct {
	mu sync.Mutex
	m  map[string]string
}

func (u *upgradeNotes) set(id, note string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.m[id] = note
}

func (u *upgradeNotes) drop(id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, id)
}

func (u *upgradeNotes) get(id string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[id]
}

// binaryRefusal is why the desired storage-server was refused (a release
// signature that does not verify, or a rollback through "latest"); it is
// reported to the master on every node's status until a download succeeds.
// The running nodes keep their current version.
type binaryRefusal struct {
	mu  sync.Mutex
	msg string
}

func (r *binaryRefusal) set(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msg = msg
}

func (r *binaryRefusal) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msg
}

// stoppedReports is the recently stopped nodes, reported until a heartbeat
// carried them (or stoppedReportFor passed), at most maxStoppedReported.
type stoppedReports struct {
	mu sync.Mutex
	m  map[string]stoppedNode
}

type stoppedNode struct {
	status controlplane.NodeStatus
	until  time.Time
	sent   bool // in a report a successful heartbeat carried: the master has seen it
}

// note reports ns stopped from now on, dropping the oldest report beyond
// the cap.
func (s *stoppedReports) note(ns controlplane.NodeStatus, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.m) >= maxStoppedReported {
		oldest := ""
		for id, x := range s.m {
			if oldest == "" || x.until.Before(s.m[oldest].until) {
				oldest = id
			}
		}
		delete(s.m, oldest)
	}
	s.m[ns.NodeID] = stoppedNode{status: ns, until: now.Add(stoppedReportFor)}
}

// forget drops node id's report (it runs again).
func (s *stoppedReports) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// report is the stopped nodes to report at now, except those in seen; they
// count as sent. Expired reports are dropped.
func (s *stoppedReports) report(seen map[string]bool, now time.Time) []controlplane.NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []controlplane.NodeStatus
	for _, id := range sortedKeys(s.m) {
		x := s.m[id]
		if now.After(x.until) {
			delete(s.m, id)
			continue
		}
		if !seen[id] {
			out = append(out, x.status)
			x.sent = true
			s.m[id] = x
		}
	}
	return out
}

// heartbeatDone drops the reports a successful heartbeat carried: the
// master dropped those nodes; reporting them again would make it record
// (and announce) them anew.
func (s *stoppedReports) heartbeatDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, x := range s.m {
		if x.sent {
			delete(s.m, id)
		}
	}
}

// nodeJobs is the jobs that own a node now: its upgrade (one node at a
// time) or its stop.
type nodeJobs struct {
	mu       sync.Mutex
	upgrades map[string]*job // node -> its upgrade job (key: target checksum)
	stopping map[string]*job // node -> its stop job
}

// busy reports whether a job owns node id now.
func (n *nodeJobs) busy(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.upgrades[id].running() || n.stopping[id].running()
}

// snapshot is the running upgrades (node -> target checksum) and stops.
func (n *nodeJobs) snapshot() (upgrading map[string]string, stopping map[string]bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	upgrading, stopping = map[string]string{}, map[string]bool{}
	for id, j := range n.upgrades {
		if j.running() {
			upgrading[id] = j.key
		} else {
			delete(n.upgrades, id)
		}
	}
	for id, j := range n.stopping {
		if j.running() {
			stopping[id] = true
		} else {
			delete(n.stopping, id)
		}
	}
	return upgrading, stopping
}

// cancelUpgrade cancels node id's upgrade job, if one runs.
func (n *nodeJobs) cancelUpgrade(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if j := n.upgrades[id]; j.running() {
		j.cancel()
	}
}

// startStop starts the stop job of node id made by mk unless one runs.
func (n *nodeJobs) startStop(id string, mk func() *job) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping[id].running() {
		return
	}
	n.stopping[id] = mk()
}

// startUpgrade starts the upgrade job of node id made by mk unless an
// upgrade runs (one node at a time); it reports whether it did.
func (n *nodeJobs) startUpgrade(id string, mk func() *job) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, j := range n.upgrades {
		if j.running() {
			return false
		}
	}
	n.upgrades[id] = mk()
	return true
}

func (n *nodeJobs) stopJob(id string) *job {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopping[id]
}

// done removes job j of node id once it ends, so that the maps hold
// running jobs only.
func (n *nodeJobs) done(id string, j *job) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.upgrades[id] == j {
		delete(n.upgrades, id)
	}
	if n.stopping[id] == j {
		delete(n.stopping, id)
	}
}

// selfUpdateJob is the agent's self-update job and its verdict.
type selfUpdateJob struct {
	mu         sync.Mutex
	job        *job  // key: desired agent version
	restartErr error // set by the job: Run must return it
}

func (s *selfUpdateJob) restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restartErr
}

func (s *selfUpdateJob) setRestart(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restartErr = err
}
