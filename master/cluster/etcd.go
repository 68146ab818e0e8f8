package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// Limits of the masters' registry.
const (
	// MaxMembers is how many masters may register at once: Members lists
	// at most that many and a master beyond it is refused at NewEtcd.
	MaxMembers = 64
	// MaxIDLen bounds a master id (--master-id).
	MaxIDLen = 128
	// maxMemberValue bounds a registration's JSON.
	maxMemberValue = 4096
	// DefaultLeaseTTL is the lease of a master's session when
	// EtcdOptions.LeaseTTL is zero.
	DefaultLeaseTTL = 5 * time.Second
)

// Keys of the masters' table (store.TableMasters), relative to the table.
const (
	memberDir   = "member/"
	electionDir = "election/"
)

// ErrDuplicateID is returned by NewEtcd when another live master holds the
// same id.
var ErrDuplicateID = errors.New("duplicate master id")

// EtcdOptions configure NewEtcd.
type EtcdOptions struct {
	// Client is the etcd client; the caller closes it after Close.
	Client *clientv3.Client
	// Prefix is the store's etcd prefix (etcdstore.DefaultPrefix when
	// empty); the masters' keys live in its table store.TableMasters.
	Prefix string
	// Self is this master; Self.ID must be unique among live masters.
	Self Member
	// LeaseTTL is the lease of this master's session (default 5 s, 2..60 s):
	// a dead leader is replaced within about LeaseTTL plus a campaign, and
	// a partitioned leader stops leading after two thirds of it.
	LeaseTTL time.Duration
	// Logger receives one line per leadership change and member change.
	Logger *slog.Logger
	// OnLeading, when set, is called in its own goroutine each time this
	// master becomes leader, with a context that ends when the leadership
	// is lost or the Coordinator closes (see RunWhileLeading).
	OnLeading func(ctx context.Context)
}

// Validate reports every problem of o at once.
func (o *EtcdOptions) Validate() error {
	var errs []error
	if o.Client == nil {
		errs = append(errs, errors.New("etcd client is required"))
	}
	if o.Prefix != "" {
		if err := etcdstore.ValidatePrefix(o.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ValidateID(o.Self.ID); err != nil {
		errs = append(errs, err)
	}
	if b, err := json.Marshal(o.Self); err != nil || len(b) > maxMemberValue {
		errs = append(errs, fmt.Errorf("master %q: registration larger than %d bytes", o.Self.ID, maxMemberValue))
	}
	if o.LeaseTTL != 0 && (o.LeaseTTL < 2*time.Second || o.LeaseTTL > 60*time.Second || o.LeaseTTL%time.Second != 0) {
		errs = append(errs, fmt.Errorf("lease TTL %s must be whole seconds between 2s and 60s", o.LeaseTTL))
	}
	return errors.Join(errs...)
}

// ValidateID checks a master id: 1..MaxIDLen bytes of printable ASCII
// without spaces or "/" (it names an etcd key).
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("master id %q must be 1..%d bytes", id, MaxIDLen)
	}
	for _, c := range []byte(id) {
		if c <= ' ' || c >= 0x7f || c == '/' {
			return fmt.Errorf("master id %q: only printable ASCII without spaces or \"/\"", id)
		}
	}
	return nil
}

// decodeMember parses a registration as another master wrote it; the key's
// id wins over the value's.
func decodeMember(id string, value []byte) (Member, error) {
	var m Member
	if len(value) > maxMemberValue {
		return m, fmt.Errorf("registration of %q is %d bytes, more than %d", id, len(value), maxMemberValue)
	}
	if err := ValidateID(id); err != nil {
		return m, err
	}
	if err := json.Unmarshal(value, &m); err != nil {
		return m, fmt.Errorf("registration of %q: %w", id, err)
	}
	if m.ID != id {
		return m, fmt.Errorf("registration under %q names master %q", id, m.ID)
	}
	m.Leader = false
	return m, nil
}

// Etcd is the Coordinator of a master among several on etcd: it registers
// the master under its session's lease (masters/member/<id>) and campaigns
// for the leadership with concurrency.Election on masters/election/.
// Leading is true only while this master is elected and its lease was
// renewed less than two thirds of the TTL ago; when the session ends
// (lease expired, etcd unreachable for longer than the TTL) it starts a
// new session and campaigns again.
type Etcd struct {
	cli         *clientv3.Client
	prefix      string
	self        Member
	ttl         time.Duration
	margin      time.Duration
	log         *slog.Logger
	electionPfx string // etcd key prefix given to NewElection (no trailing "/")
	memberPfx   string // etcd key prefix of registrations

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	errc   chan error // the run loop's shutdown error

	stopLeading context.CancelFunc // ends OnLeading's RunWhileLeading
	leadWG      sync.WaitGroup

	mu       sync.Mutex
	elected  bool
	leaseID  clientv3.LeaseID
	lastKA   time.Time // last time the lease was known alive (monotonic)
	fence    store.Cond
	lead     bool // last broadcast Leading
	term     uint64
	reason   string // why the leadership may end next (for the log)
	changed  chan struct{}
	members  map[string]bool
	closed   bool
	memberMu sync.Mutex
}

var (
	_ Coordinator = (*Etcd)(nil)
	_ Notifier    = (*Etcd)(nil)
)

// NewEtcd registers o.Self under a new session's lease and starts
// campaigning in the background. A second live master with the same id is
// refused (ErrDuplicateID) after waiting up to one LeaseTTL for a stale
// registration of a dead process with that id to expire.
func NewEtcd(ctx context.Context, o EtcdOptions) (*Etcd, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("etcd coordinator: %w", err)
	}
	if o.Prefix == "" {
		o.Prefix = etcdstore.DefaultPrefix
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Self.Leader = false
	table := etcdstore.TablePrefix(o.Prefix, store.TableMasters)
	e := &Etcd{
		cli:         o.Client,
		prefix:      o.Prefix,
		self:        o.Self,
		ttl:         o.LeaseTTL,
		margin:      o.LeaseTTL / 3,
		log:         o.Logger.With("master", o.Self.ID),
		electionPfx: table + strings.TrimSuffix(electionDir, "/"),
		memberPfx:   table + memberDir,
		changed:     make(chan struct{}),
		members:     map[string]bool{},
		errc:        make(chan error, 1),
	}
	rev, err := e.loadMembers(ctx)
	if err != nil {
		return nil, err
	}
	if len(e.members) >= MaxMembers && !e.members[o.Self.ID] {
		return nil, fmt.Errorf("etcd coordinator: %d masters registered already, at most %d", len(e.members), MaxMembers)
	}
	sess, err := e.newSession(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.register(ctx, sess, true); err != nil {
		sess.Close()
		return nil, err
	}
	e.memberMu.Lock()
	e.members[o.Self.ID] = true
	e.memberMu.Unlock()
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.wg.Add(3)
	go func() { defer e.wg.Done(); e.watchMembers(rev + 1) }()
	go func() { defer e.wg.Done(); e.watchdog() }()
	go func() { defer e.wg.Done(); e.errc <- e.run(sess) }()
	if o.OnLeading != nil {
		var lctx context.Context
		lctx, e.stopLeading = context.WithCancel(e.ctx)
		e.leadWG.Add(1)
		go func() { defer e.leadWG.Done(); RunWhileLeading(lctx, e, o.OnLeading) }()
	}
	return e, nil
}

// Self is this master.
func (e *Etcd) Self() Member {
	m := e.self
	m.Leader = e.Leading()
	return m
}

// Leading reports whether this master is elected and its lease is certainly
// alive: its last renewal was sent less than TTL − TTL/3 ago.
func (e *Etcd) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leadingLocked(time.Now())
}

func (e *Etcd) leadingLocked(now time.Time) bool {
	return e.elected && !e.closed && now.Sub(e.lastKA) < e.ttl-e.margin
}

// Leadership implements Notifier.
func (e *Etcd) Leadership() (uint64, bool, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.refreshLocked(time.Now())
	return e.term, e.lead, e.changed
}

// refreshLocked broadcasts a change of Leading and logs it.
func (e *Etcd) refreshLocked(now time.Time) {
	l := e.leadingLocked(now)
	if l == e.lead {
		return
	}
	e.lead = l
	if l {
		e.term++
		e.log.Info("became leader", "term", e.term, "lease", leaseHex(e.leaseID), "election_rev", e.fence.Rev)
	} else {
		reason := e.reason
		if e.elected && !e.closed && !e.lastKA.IsZero() && now.Sub(e.lastKA) >= e.ttl-e.margin {
			reason = fmt.Sprintf("lease keep-alive overdue (last renewed %s ago, TTL %s)", now.Sub(e.lastKA).Round(time.Millisecond), e.ttl)
		}
		e.log.Warn("lost leadership", "term", e.term, "reason", reason)
	}
	close(e.changed)
	e.changed = make(chan struct{})
}

// setElected records the outcome of an election or its end.
func (e *Etcd) setElected(elected bool, fence store.Cond, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.elected, e.fence, e.reason = elected, fence, reason
	e.refreshLocked(time.Now())
}

// watchdog turns Leading false (and tells the Notifier's listeners) as soon
// as the keep-alives are overdue, without waiting for etcd to say so.
func (e *Etcd) watchdog() {
	t := time.NewTicker(e.ttl / 20)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			e.mu.Lock()
			e.refreshLocked(now)
			e.mu.Unlock()
		}
	}
}

// Fence is the condition that this master's election key is still the one
// it was elected with: etcd's concurrency.Election Key() and Rev() as a
// store.Cond on table masters.
func (e *Etcd) Fence() ([]store.Cond, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.leadingLocked(time.Now()) {
		return nil, false
	}
	c := e.fence
	c.Key = append([]byte(nil), c.Key...)
	return []store.Cond{c}, true
}

// Alive reports whether master id has a live registration, from the watched
// cache.
func (e *Etcd) Alive(id string) bool {
	e.memberMu.Lock()
	defer e.memberMu.Unlock()
	return e.members[id]
}

// Members lists the registered masters from etcd, the leader marked, sorted
// by ID (at most MaxMembers).
func (e *Etcd) Members(ctx context.Context) ([]Member, error) {
	resp, err := e.cli.Get(ctx, e.memberPfx, clientv3.WithPrefix(), clientv3.WithLimit(MaxMembers))
	if err != nil {
		return nil, fmt.Errorf("list masters: %w", err)
	}
	leader := ""
	lresp, err := e.cli.Get(ctx, e.electionPfx+"/", append(clientv3.WithFirstCreate(), clientv3.WithRev(resp.Header.Revision))...)
	if err != nil {
		return nil, fmt.Errorf("read election leader: %w", err)
	}
	if len(lresp.Kvs) > 0 {
		leader = string(lresp.Kvs[0].Value)
	}
	out := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), e.memberPfx)
		m, err := decodeMember(id, kv.Value)
		if err != nil {
			e.log.Warn("skip bad master registration", "err", err)
			continue
		}
		m.Leader = m.ID == leader
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Close resigns the leadership if held, deletes the registration and
// revokes the session's lease, so another master leads at once.
func (e *Etcd) Close() error {
	var err error
	e.once.Do(func() {
		// Stop leading first: OnLeading's fn returns before another master
		// can be elected.
		e.mu.Lock()
		e.closed = true
		e.reason = "closed"
		e.refreshLocked(time.Now())
		e.mu.Unlock()
		if e.stopLeading != nil {
			e.stopLeading()
			e.leadWG.Wait()
		}
		e.cancel()
		err = <-e.errc
		e.wg.Wait()
	})
	return err
}

// newSession grants a lease, follows its keep-alives (lastKA) and wraps it
// in a concurrency.Session.
func (e *Etcd) newSession(ctx context.Context) (*concurrency.Session, error) {
	start := time.Now()
	gctx, cancel := context.WithTimeout(ctx, e.ttl)
	defer cancel()
	g, err := e.cli.Grant(gctx, int64(e.ttl/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant etcd lease: %w", err)
	}
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(g.ID), concurrency.WithTTL(int(e.ttl/time.Second)))
	if err != nil {
		e.cli.Revoke(gctx, g.ID)
		return nil, fmt.Errorf("etcd session: %w", err)
	}
	if sess == nil { // NewSession returns (nil, nil) when the client is closed
		return nil, fmt.Errorf("etcd session: %w", context.Canceled)
	}
	e.mu.Lock()
	e.leaseID, e.lastKA = g.ID, start
	e.mu.Unlock()
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.renew(sess) }()
	return sess, nil
}

// renew renews the session's lease every TTL/5 on its own and records, as
// lastKA, when the last successful renewal was sent: etcd extends the
// lease by TTL from some instant after that, so the lease certainly lives
// until lastKA + TTL. (The session's keep-alives go on as well; their
// responses say only when they arrived, not when the lease was renewed.)
func (e *Etcd) renew(sess *concurrency.Session) {
	id := sess.Lease()
	t := time.NewTicker(e.ttl / 5)
	defer t.Stop()
	for {
		select {
		case <-sess.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		ctx, cancel := context.WithTimeout(sess.Ctx(), e.margin)
		r, err := e.cli.KeepAliveOnce(ctx, id)
		cancel()
		e.mu.Lock()
		if e.leaseID == id {
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				// Revoked or expired at etcd: not alive, whatever the clock says.
				e.lastKA = time.Time{}
				e.reason = "lease not found at etcd (expired or revoked)"
			case err == nil && r.TTL > 0 && sent.After(e.lastKA):
				e.lastKA = sent
			}
			e.refreshLocked(time.Now())
		}
		e.mu.Unlock()
	}
}

// register creates member/<id> under the session's lease, only if absent.
// first: at NewEtcd, wait up to one TTL for a stale registration to expire.
func (e *Etcd) register(ctx context.Context, sess *concurrency.Session, first bool) error {
	key := e.memberPfx + e.self.ID
	val, err := json.Marshal(e.self)
	if err != nil {
		return fmt.Errorf("encode registration: %w", err)
	}
	deadline := time.Now().Add(e.ttl + time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, e.ttl)
		resp, err := e.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(sess.Lease()))).
			Else(clientv3.OpGet(key)).
			Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("register master %s: %w", e.self.ID, err)
		}
		if resp.Succeeded {
			return nil
		}
		var holder clientv3.LeaseID
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			holder = clientv3.LeaseID(kvs[0].Lease)
		}
		if holder == sess.Lease() {
			return nil
		}
		if !first || time.Now().After(deadline) {
			return fmt.Errorf("another master with id %s is registered (lease %s live; a dead master's registration expires within %s); give each master its own --master-id: %w",
				e.self.ID, leaseHex(holder), e.ttl, ErrDuplicateID)
		}
		e.log.Info("master id registered under another lease; waiting for it to expire", "lease", leaseHex(holder))
		select {
		case <-ctx.Done():
			return fmt.Errorf("register master %s: %w", e.self.ID, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// run campaigns, leads and starts over on a new session until Close.
func (e *Etcd) run(sess *concurrency.Session) error {
	backoff := 100 * time.Millisecond
	for {
		if sess == nil {
			if e.cli.Ctx().Err() != nil {
				e.log.Warn("etcd client closed; leaving the election")
				return nil
			}
			s, err := e.newSession(e.ctx)
			if err == nil {
				err = e.register(e.ctx, s, false)
				if err != nil {
					s.Close()
				}
			}
			if err != nil {
				if e.ctx.Err() != nil {
					return nil
				}
				e.log.Warn("etcd session failed; retrying", "err", err, "retry_in", backoff)
				select {
				case <-e.ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, e.ttl)
				continue
			}
			backoff = 100 * time.Millisecond
			sess = s
			e.log.Info("new etcd session", "lease", leaseHex(sess.Lease()))
		}
		elec := concurrency.NewElection(sess, e.electionPfx)
		reason := e.campaignAndLead(sess, elec)
		e.setElected(false, store.Cond{}, reason)
		if e.ctx.Err() != nil {
			return e.shutdown(sess, elec)
		}
		select {
		case <-sess.Done():
			// The session ended on this side (no renewal for a TTL); its
			// lease may still live at etcd, holding the registration and a
			// stale candidate key: revoke it so the new session need not
			// wait for it to expire.
			rctx, cancel := context.WithTimeout(e.ctx, e.margin)
			if _, err := e.cli.Revoke(rctx, sess.Lease()); err == nil {
				e.log.Info("revoked the lease of the ended session", "lease", leaseHex(sess.Lease()))
			}
			cancel()
			sess = nil
		default:
		}
	}
}

// campaignAndLead campaigns, and once elected, leads until the election key
// is gone, the session ends or the Coordinator closes; it returns why.
func (e *Etcd) campaignAndLead(sess *concurrency.Session, elec *concurrency.Election) string {
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	stop := context.AfterFunc(sess.Ctx(), cancel)
	defer stop()
	if err := elec.Campaign(ctx, e.self.ID); err != nil {
		if ctx.Err() == nil {
			e.log.Warn("campaign failed", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(e.ttl / 10):
			}
		}
		return "campaign ended: " + errString(err)
	}
	key := elec.Key()
	g, err := e.cli.Get(ctx, key)
	if err != nil {
		return "read election key: " + err.Error()
	}
	if len(g.Kvs) == 0 || clientv3.LeaseID(g.Kvs[0].Lease) != sess.Lease() || g.Kvs[0].CreateRevision != elec.Rev() {
		return "election key gone after the campaign"
	}
	kv := g.Kvs[0]
	rel := strings.TrimPrefix(key, etcdstore.TablePrefix(e.prefix, store.TableMasters))
	e.setElected(true, store.Cond{Table: store.TableMasters, Key: []byte(rel), Rev: store.Revision(kv.ModRevision)}, "")
	from := g.Header.Revision + 1
	for {
		wch := e.cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(from))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return "election key deleted"
				}
				if ev.Kv.ModRevision != kv.ModRevision {
					return "election key rewritten"
				}
			}
			from = wr.Header.Revision + 1
		}
		select {
		case <-sess.Done():
			return "session lease expired"
		case <-e.ctx.Done():
			return "closed"
		default:
		}
		// The watch broke (no etcd leader, compaction): check the key.
		g, err := e.cli.Get(ctx, key)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			select {
			case <-ctx.Done():
			case <-time.After(e.ttl / 10):
			}
			continue
		}
		if len(g.Kvs) == 0 || g.Kvs[0].ModRevision != kv.ModRevision {
			return "election key gone"
		}
		from = g.Header.Revision + 1
	}
}

// shutdown resigns, deletes the registration and revokes the lease, within
// one TTL in all.
func (e *Etcd) shutdown(sess *concurrency.Session, elec *concurrency.Election) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.ttl)
	defer cancel()
	var errs []error
	if elec != nil {
		if err := elec.Resign(ctx); err != nil {
			errs = append(errs, fmt.Errorf("resign: %w", err))
		}
	}
	key := e.memberPfx + e.self.ID
	if _, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", sess.Lease())).Then(clientv3.OpDelete(key)).Commit(); err != nil {
		errs = append(errs, fmt.Errorf("delete registration: %w", err))
	}
	sess.Orphan()
	if _, err := e.cli.Revoke(ctx, sess.Lease()); err != nil {
		errs = append(errs, fmt.Errorf("revoke lease: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		e.log.Warn("leaving the control plane uncleanly; the lease expires within its TTL", "err", err)
		return err
	}
	e.log.Info("left the control plane")
	return nil
}

// loadMembers fills the cache of live registrations; it returns the
// revision read.
func (e *Etcd) loadMembers(ctx context.Context) (int64, error) {
	resp, err := e.cli.Get(ctx, e.memberPfx, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(MaxMembers))
	if err != nil {
		return 0, fmt.Errorf("list masters: %w", err)
	}
	m := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m[strings.TrimPrefix(string(kv.Key), e.memberPfx)] = true
	}
	e.memberMu.Lock()
	e.members = m
	e.memberMu.Unlock()
	return resp.Header.Revision, nil
}

// watchMembers keeps the cache of live registrations current; it logs
// masters joining and leaving.
func (e *Etcd) watchMembers(from int64) {
	backoff := 100 * time.Millisecond
	for e.ctx.Err() == nil {
		wch := e.cli.Watch(e.ctx, e.memberPfx, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithKeysOnly())
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			e.memberMu.Lock()
			for _, ev := range wr.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), e.memberPfx)
				switch {
				case ev.Type == clientv3.EventTypeDelete && e.members[id]:
					delete(e.members, id)
					e.log.Info("master left", "id", id)
				case ev.Type == clientv3.EventTypePut && !e.members[id] && len(e.members) < 4*MaxMembers:
					e.members[id] = true
					e.log.Info("master joined", "id", id)
				}
			}
			e.memberMu.Unlock()
			from = wr.Header.Revision + 1
			backoff = 100 * time.Millisecond
		}
		if e.ctx.Err() != nil || e.cli.Ctx().Err() != nil {
			return
		}
		// The watch broke (compaction, etcd restart): list again.
		select {
		case <-e.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, e.ttl)
		rctx, cancel := context.WithTimeout(e.ctx, e.ttl)
		rev, err := e.loadMembers(rctx)
		cancel()
		if err != nil {
			e.log.Warn("reload masters", "err", err)
			continue
		}
		from = rev + 1
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// leaseHex is how concurrency.Election names a session's key.
func leaseHex(id clientv3.LeaseID) string { return strconv.FormatInt(int64(id), 16) }
