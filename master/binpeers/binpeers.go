// Package binpeers is the binaries registry of several masters, each
// serving its own BINARIES_DIR (shared storage, or a copy on each): which
// master publishes which file with which checksum, in the store's table
// "binaries".
//
// Trust model. The masters trust each other and the store; nothing here
// comes from a client. What the registry guarantees is that every master
// that serves a file name serves the same bytes: agents verify a download
// against the checksum the master they asked announced, and a redirect to
// another master must not hand them different bytes.
//
// Layout. Each master records what it publishes at "<file name>/<master
// id>" → Record{sha256, size, http_url, at}, and deletes it when the file
// is withdrawn; on start it deletes the records it owns for files it no
// longer publishes. Beside them, one claim per name, "<file name>" →
// Claim{sha256, size, masters}, holds the agreed checksum and the masters
// whose records hold it.
//
// Agreement. Before the catalog publishes a file (catalog.Gate.Admit) the
// registry reads the claim: absent, this master creates it (ApplyIf
// IfAbsent); the same checksum, it adds itself (ApplyIf on the claim's
// revision); a different checksum held by an alive master, it refuses —
// the catalog keeps the file out and logs both checksums and that
// master's id; a different checksum held only by masters that are not
// alive, it takes the claim over. Every write of a name's records also
// rewrites its claim on condition of the revision it read, in the same
// transaction, so the claim serializes all of them: of two masters
// publishing different files at once one commits, the other's condition
// fails and it reads the winner's claim and refuses. The last master to
// withdraw the name deletes the claim in the transaction that deletes its
// record, on the same condition, so a master joining at that moment is
// never left holding a name without a claim. (Conditions on the other
// masters' record keys instead would need to know every key that might
// appear; one claim key is what a compare-and-swap can guard.)
//
// Redirects. Holder answers from an in-memory view of the table that
// follows the store (Scan, then Watch): an alive master other than this
// one listed by the name's claim, whose record has the claim's checksum
// and an http_url. A download is never redirected on a guess: a master
// not alive, or a record that disagrees with the claim, is skipped.
package binpeers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/store"
)

// DefaultMaxRecords caps the files one master records (Options.MaxRecords).
const DefaultMaxRecords = 10000

// ErrConflict: another alive master publishes the name with a different
// checksum.
var ErrConflict = errors.New("binaries must be identical on every master: copy the same file, or remove it")

// Coordinator is what the registry needs of master/cluster: this master,
// and whether another is alive. cluster.Coordinator has both.
type Coordinator interface {
	Self() cluster.Member
	Alive(id string) bool
}

// Gated is the catalog the registry gates (catalog.Catalog).
type Gated interface {
	SetGate(g catalog.Gate)
}

// Options configures a Registry.
type Options struct {
	// Store holds the table (store.TableBinaries). Required.
	Store store.Store
	// Coordinator names this master and tells which others are alive. Required.
	Coordinator Coordinator
	// Catalog, when set, gets the registry as its gate (New calls
	// SetGate, which re-admits what it already publishes).
	Catalog Gated
	// Logger; nil discards.
	Logger *slog.Logger
	// MaxRecords caps the files this master records; beyond it a file is
	// refused. Zero: DefaultMaxRecords.
	MaxRecords int
	// Timeout bounds each store round trip of Admit and withdrawals. Zero: 10s.
	Timeout time.Duration
}

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Store == nil {
		errs = append(errs, errors.New("binpeers: Store is required"))
	}
	if o.Coordinator == nil {
		errs = append(errs, errors.New("binpeers: Coordinator is required"))
	} else {
		self := o.Coordinator.Self()
		if err := validID(self.ID); err != nil {
			errs = append(errs, fmt.Errorf("binpeers: this master's id: %w", err))
		}
		if self.HTTPURL != "" {
			if err := ValidURL(self.HTTPURL); err != nil {
				errs = append(errs, fmt.Errorf("binpeers: this master's %w", err))
			}
		}
	}
	if o.MaxRecords < 0 {
		errs = append(errs, fmt.Errorf("binpeers: MaxRecords %d is negative", o.MaxRecords))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("binpeers: Timeout %s is negative", o.Timeout))
	}
	return errors.Join(errs...)
}

// Registry records this master's binaries and finds other masters'. It
// implements catalog.Gate and binapi.Peers. Safe for concurrent use.
type Registry struct {
	st      store.Store
	coord   Coordinator
	cat     Gated
	log     *slog.Logger
	self    cluster.Member
	max     int
	timeout time.Duration

	mu sync.Mutex // serializes this master's writes to the store

	wmu  sync.Mutex
	mine map[string]string // name -> sha256 admitted and published
	gone map[string]bool   // withdrawn, record to delete
	wake chan struct{}

	vmu     sync.RWMutex
	claims  map[string]Claim
	records map[string]map[string]Record // name -> master id -> record
	ready   chan struct{}                // closed once the view is loaded

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New loads the table, starts following it, deletes this master's records
// of files it does not publish, and installs itself as opts.Catalog's gate.
func New(ctx context.Context, opts Options) (*Registry, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		st: opts.Store, coord: opts.Coordinator, cat: opts.Catalog, log: opts.Logger, self: opts.Coordinator.Self(),
		max: cmp.Or(opts.MaxRecords, DefaultMaxRecords), timeout: cmp.Or(opts.Timeout, 10*time.Second),
		mine: map[string]string{}, gone: map[string]bool{}, wake: make(chan struct{}, 1),
		claims: map[string]Claim{}, records: map[string]map[string]Record{},
		ready: make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	rev, err := r.load(ctx)
	if err != nil {
		r.cancel()
		return nil, err
	}
	close(r.ready)
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.follow(rev) }()
	go func() { defer r.wg.Done(); r.withdrawals() }()
	if opts.Catalog != nil {
		opts.Catalog.SetGate(r)
	}
	if err := r.reconcile(ctx); err != nil {
		r.log.Warn("cannot remove this master's stale binary records; the next start tries again (redirected requests for them get 404 here)", "err", err)
	}
	if r.self.HTTPURL == "" {
		r.log.Warn("this master has no HTTP URL to advertise: other masters cannot redirect downloads to it")
	}
	return r, nil
}

// Close removes the registry from the catalog's gate (what the catalog
// publishes while the master shuts down is no longer checked nor
// recorded) and stops following the store. Records stay: the next start
// reconciles them.
func (r *Registry) Close() error {
	if r.cat != nil {
		r.cat.SetGate(nil)
	}
	r.cancel()
	r.wg.Wait()
	return nil
}

// Admit implements catalog.Gate: it records that this master publishes
// name with sha256, unless another alive master publishes it with a
// different checksum (ErrConflict, naming both checksums and the master).
func (r *Registry) Admit(name, sha256 string, size int64) error {
	if !isHexSHA256(sha256) || size < 1 || size > MaxSize {
		return fmt.Errorf("binary %s: checksum %q or size %d out of range", name, sha256, size)
	}
	if _, _, err := splitKey(claimKey(name)); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wmu.Lock()
	_, had := r.mine[name]
	n := len(r.mine)
	r.wmu.Unlock()
	if !had && n >= r.max {
		return fmt.Errorf("this master already publishes %d binaries, the most one master records; remove old ones", r.max)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	err := r.admit(ctx, name, sha256, size)
	r.wmu.Lock()
	if err != nil {
		delete(r.mine, name)
	} else {
		r.mine[name] = sha256
		delete(r.gone, name)
	}
	r.wmu.Unlock()
	if errors.Is(err, ErrConflict) {
		// A record of this master's older content must not attract redirects.
		if derr := r.dropOwn(ctx, name); derr != nil {
			r.log.Warn("cannot delete this master's record of a refused binary", "file", name, "err", derr)
		}
	}
	return err
}

func (r *Registry) admit(ctx context.Context, name, sum string, size int64) error {
	self := r.self.ID
	rec := encode(Record{SHA256: sum, Size: size, HTTPURL: r.self.HTTPURL, At: time.Now().UTC().Truncate(time.Second)})
	for attempt := 0; ; attempt++ {
		if attempt == 8 {
			return fmt.Errorf("record binary %s: the store kept changing under it; retried as files change: %w", name, store.ErrConflict)
		}
		c, crev, err := r.claim(ctx, name)
		if err != nil {
			return err
		}
		var next Claim
		switch {
		case crev == 0:
			next = Claim{SHA256: sum, Size: size, Masters: []string{self}}
		case c.SHA256 == sum:
			if slices.Contains(c.Masters, self) {
				if own, orev, err := r.st.Get(ctx, store.TableBinaries, recordKey(name, self)); err == nil && orev != 0 {
					if o, err := DecodeRecord(own); err == nil && o.SHA256 == sum && o.HTTPURL == r.self.HTTPURL {
						return nil // already recorded (a restart)
					}
				}
			}
			next = Claim{SHA256: c.SHA256, Size: c.Size, Masters: addID(c.Masters, self)}
			if len(next.Masters) > MaxMasters {
				return fmt.Errorf("binary %s is held by %d masters already (at most %d)", name, len(c.Masters), MaxMasters)
			}
		default:
			for _, id := range c.Masters {
				if id != self && r.coord.Alive(id) {
					return fmt.Errorf("%s has sha256 %s here but %s on master %s: %w", name, sum, c.SHA256, id, ErrConflict)
				}
			}
			r.log.Info("binary claim taken over: no master holding its checksum is alive", "file", name,
				"sha256", sum, "previous_sha256", c.SHA256, "previous_masters", c.Masters)
			next = Claim{SHA256: sum, Size: size, Masters: []string{self}}
		}
		_, err = r.st.ApplyIf(ctx, []store.Cond{store.IfRevision(store.TableBinaries, claimKey(name), crev)}, []store.Op{
			store.Put(store.TableBinaries, claimKey(name), encode(next)),
			store.Put(store.TableBinaries, recordKey(name, self), rec),
		})
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("record binary %s: %w", name, err)
		}
		return nil
	}
}

// claim reads name's claim; an unreadable one counts as absent at its
// revision (the next write replaces it).
func (r *Registry) claim(ctx context.Context, name string) (Claim, store.Revision, error) {
	v, rev, err := r.st.Get(ctx, store.TableBinaries, claimKey(name))
	if err != nil {
		return Claim{}, 0, fmt.Errorf("read the binary claim of %s: %w", name, err)
	}
	if rev == 0 {
		return Claim{}, 0, nil
	}
	c, err := DecodeClaim(v)
	if err != nil {
		r.log.Warn("binary claim unreadable; replacing it", "file", name, "err", err)
		return Claim{}, rev, nil
	}
	return c, rev, nil
}

// Withdrawn implements catalog.Gate: the record is deleted in the
// background (a store round trip must not hold the catalog up).
func (r *Registry) Withdrawn(name string) {
	r.wmu.Lock()
	delete(r.mine, name)
	r.gone[name] = true
	r.wmu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Registry) withdrawals() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		}
		r.wmu.Lock()
		names := make([]string, 0, len(r.gone))
		for n := range r.gone {
			names = append(names, n)
		}
		clear(r.gone)
		r.wmu.Unlock()
		for _, name := range names {
			r.remove(name)
		}
	}
}

// remove deletes this master's record of name unless it publishes name
// again, and drops it from the claim (deleting the claim if it was the last).
func (r *Registry) remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holds(name) {
		return // published again since (Admit ran after Withdrawn)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	if err := r.dropOwn(ctx, name); err != nil && r.ctx.Err() == nil {
		r.log.Warn("cannot delete this master's record of a withdrawn binary; other masters may redirect to it until it is", "file", name, "err", err)
		return
	}
	r.log.Info("binary record deleted", "file", name)
}

func (r *Registry) holds(name string) bool {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	_, ok := r.mine[name]
	return ok
}

// dropOwn deletes this master's record of name and takes it out of the
// claim, deleting the claim when no master is left in it.
func (r *Registry) dropOwn(ctx context.Context, name string) error {
	self := r.self.ID
	for range 8 {
		c, crev, err := r.claim(ctx, name)
		if err != nil {
			return err
		}
		ops := []store.Op{store.Delete(store.TableBinaries, recordKey(name, self))}
		if crev != 0 {
			left := slices.DeleteFunc(slices.Clone(c.Masters), func(id string) bool { return id == self })
			if c.SHA256 == "" || len(left) == 0 {
				ops = append(ops, store.Delete(store.TableBinaries, claimKey(name)))
			} else if len(left) != len(c.Masters) {
				ops = append(ops, store.Put(store.TableBinaries, claimKey(name), encode(Claim{SHA256: c.SHA256, Size: c.Size, Masters: left})))
			}
		}
		_, err = r.st.ApplyIf(ctx, []store.Cond{store.IfRevision(store.TableBinaries, claimKey(name), crev)}, ops)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete the record of %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("delete the record of %s: the store kept changing under it: %w", name, store.ErrConflict)
}

// reconcile deletes the records this master owns for files it does not
// publish (left by a previous run), and its place in claims without them.
func (r *Registry) reconcile(ctx context.Context) error {
	var stale []string
	err := r.st.Scan(ctx, store.TableBinaries, func(k, v []byte) error {
		name, id, err := splitKey(k)
		if err != nil {
			return nil
		}
		if id == r.self.ID {
			stale = append(stale, name)
		}
		if id == "" {
			if c, err := DecodeClaim(v); err == nil && slices.Contains(c.Masters, r.self.ID) {
				stale = append(stale, name)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan the binaries table: %w", err)
	}
	slices.Sort(stale)
	stale = slices.Compact(stale)
	var errs []error
	for _, name := range stale {
		r.mu.Lock()
		if !r.holds(name) {
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			if err := r.dropOwn(cctx, name); err != nil {
				errs = append(errs, err)
			} else {
				r.log.Info("stale binary record deleted (the file is no longer published here)", "file", name)
			}
			cancel()
		}
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Holder implements binapi.Peers: the base URL of an alive master other
// than this one that publishes name with the agreed checksum, chosen at
// random among them to spread the load.
func (r *Registry) Holder(ctx context.Context, name string) (string, bool) {
	select {
	case <-r.ready:
	case <-ctx.Done():
		return "", false
	}
	r.vmu.RLock()
	var urls []string
	if c, ok := r.claims[name]; ok {
		for _, id := range c.Masters {
			rec, ok := r.records[name][id]
			if !ok || id == r.self.ID || rec.SHA256 != c.SHA256 || rec.HTTPURL == "" || rec.HTTPURL == r.self.HTTPURL || !r.coord.Alive(id) {
				continue
			}
			urls = append(urls, rec.HTTPURL)
		}
	}
	r.vmu.RUnlock()
	if len(urls) == 0 {
		return "", false
	}
	return urls[rand.IntN(len(urls))], true
}

// addID returns ids with id added, sorted and unique.
func addID(ids []string, id string) []string {
	out := append(slices.Clone(ids), id)
	slices.Sort(out)
	return slices.Compact(out)
}
