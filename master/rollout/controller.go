package rollout

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
)

// Fleet is what the controller needs of the fleet (*fleet.Fleet).
type Fleet interface {
	Agents() []fleet.Agent
	SetDesiredVersion(ctx context.Context, c fleet.VersionChange) ([]fleet.Agent, error)
	Record(ctx context.Context, typ, agentID, msg string) error
}

// Catalog is what the controller needs of the binary catalog.
type Catalog interface {
	Lookup(artifactName, version, platformName, arch string) (catalog.Binary, bool)
}

// Yanks tells whether a version is yanked (*releases.Releases).
type Yanks interface {
	Yanked(artifactName, version string) bool
}

// Options configure a Controller.
type Options struct {
	Store store.Store // required
	Fleet Fleet       // required
	// Catalog, when set, must hold the version for every platform/arch
	// of the target set.
	Catalog Catalog
	// Yanks, when set, refuses yanked versions (nil: nothing is yanked).
	Yanks Yanks
	// RequireSigned also requires a signature beside every binary of the
	// version (the signing hook: catalog.Binary.Signature).
	RequireSigned bool
	// Interval between steps (default 1s).
	Interval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger
	// Fence, when set, gives the conditions the stepping master's writes
	// carry (cluster.Coordinator.Fence): with several masters only the
	// leader steps, and a deposed leader's late step fails instead of
	// overwriting its successor's. ok false: not the leader, no step.
	Fence func() (conds []store.Cond, ok bool)
	// KeepFinished is how many finished rollouts (completed, aborted,
	// rolled back, failed) are kept; older ones are deleted by the stepping
	// master (default 100), so the rollouts table does not only grow.
	KeepFinished int
}

// Controller runs rollouts. Its methods are safe for concurrent use.
type Controller struct {
	opts Options
	mu   sync.Mutex
	all  map[string]*entry
	wake chan struct{}
}

type entry struct {
	r   Rollout
	rev store.Revision
}

// New loads every persisted rollout; Run resumes the active ones.
func New(ctx context.Context, o Options) (*Controller, error) {
	if o.Store == nil || o.Fleet == nil {
		return nil, errors.New("rollout: Store and Fleet are required")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.KeepFinished <= 0 {
		o.KeepFinished = DefaultKeepFinished
	}
	c := &Controller{opts: o, all: map[string]*entry{}, wake: make(chan struct{}, 1)}
	var ids []string
	err := o.Store.Scan(ctx, store.TableRollouts, func(k, _ []byte) error {
		ids = append(ids, string(k))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load rollouts: %w", err)
	}
	for _, id := range ids {
		if err := c.reload(ctx, id); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func encode(r Rollout) ([]byte, error) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if err := json.NewEncoder(zw).Encode(r); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func decode(v []byte) (Rollout, error) {
	var r Rollout
	zr, err := gzip.NewReader(bytes.NewReader(v))
	if err != nil {
		return r, err
	}
	data, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(data, &r)
}

// reload reads rollout id from the store (after a conflict, or at start).
func (c *Controller) reload(ctx context.Context, id string) error {
	v, rev, err := c.opts.Store.Get(ctx, store.TableRollouts, []byte(id))
	if err != nil {
		return fmt.Errorf("read rollout %s: %w", id, err)
	}
	if v == nil {
		c.mu.Lock()
		delete(c.all, id)
		c.mu.Unlock()
		return nil
	}
	r, err := decode(v)
	if err != nil {
		return fmt.Errorf("decode rollout %s: %w", id, err)
	}
	c.mu.Lock()
	c.all[id] = &entry{r: r, rev: rev}
	c.mu.Unlock()
	return nil
}

// DefaultKeepFinished is Options.KeepFinished's default.
const DefaultKeepFinished = 100

// save persists r with a CAS on the revision read (and the fence, if
// given); the caller holds no lock.
func (c *Controller) save(ctx context.Context, r Rollout, rev store.Revision, fence ...store.Cond) (store.Revision, error) {
	v, err := encode(r)
	if err != nil {
		return 0, fmt.Errorf("encode rollout %s: %w", r.ID, err)
	}
	key := []byte(r.ID)
	conds := append([]store.Cond{store.IfRevision(store.TableRollouts, key, rev)}, fence...)
	nrev, err := c.opts.Store.ApplyIf(ctx, conds, []store.Op{store.Put(store.TableRollouts, key, v)})
	if err != nil {
		return 0, fmt.Errorf("save rollout %s: %w", r.ID, err)
	}
	return nrev, nil
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "ro-" + hex.EncodeToString(b[:])
}

// Prepare validates spec and plans its membership without starting it
// (--dry-run). The returned rollout is pending and not persisted.
func (c *Controller) Prepare(ctx context.Context, s Spec) (Rollout, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return Rollout{}, err
	}
	if len(s.RollbackTo) == 0 && c.opts.Yanks != nil && c.opts.Yanks.Yanked(s.Artifact, s.Version) {
		return Rollout{}, fmt.Errorf("%w: %s %s is yanked; unyank it or pick another version", ErrInvalid, s.Artifact, s.Version)
	}
	id := newID()
	members, waves, err := Plan(id, s, c.opts.Fleet.Agents())
	if err != nil {
		return Rollout{}, err
	}
	if len(s.RollbackTo) == 0 && c.opts.Catalog != nil {
		if err := c.published(s, members); err != nil {
			return Rollout{}, err
		}
	}
	now := c.opts.Now()
	r := Rollout{ID: id, Spec: s, State: Pending, Members: members, Waves: waves, Created: now, Updated: now, CreatedBy: actor.From(ctx), RollingBack: len(s.RollbackTo) > 0}
	if r.Count(AgentSkipped) == len(members) {
		return Rollout{}, fmt.Errorf("%w: every agent of the target set is pinned", ErrInvalid)
	}
	return r, nil
}

// published checks the version is in the catalog (and signed, when
// required) for every platform/arch of the members that will change.
func (c *Controller) published(s Spec, members []Member) error {
	seen := map[string]bool{}
	var missing []string
	for _, m := range members {
		k := m.Platform + "/" + m.Arch
		if m.State == AgentSkipped || seen[k] {
			continue
		}
		seen[k] = true
		b, ok := c.opts.Catalog.Lookup(s.Artifact, s.Version, m.Platform, m.Arch)
		switch {
		case !ok:
			missing = append(missing, k)
		case c.opts.RequireSigned && b.Signature == "":
			missing = append(missing, k+" (unsigned)")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: %s %s is not published for %s; upload it to the binaries directory first", ErrInvalid, s.Artifact, s.Version, strings.Join(missing, ", "))
	}
	return nil
}

// Start validates, plans and persists a new rollout, refusing it while
// another rollout of the same artifact is active.
func (c *Controller) Start(ctx context.Context, s Spec) (Rollout, error) {
	r, err := c.Prepare(ctx, s)
	if err != nil {
		return Rollout{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.all {
		if e.r.Spec.Artifact == r.Spec.Artifact && e.r.State.Active() {
			return Rollout{}, fmt.Errorf("%w: rollout %s of %s is %s; pause, abort or wait for it first", ErrPrecondition, e.r.ID, e.r.Spec.Artifact, e.r.State)
		}
	}
	rev, err := c.save(ctx, r, 0)
	if err != nil {
		return Rollout{}, err
	}
	c.all[r.ID] = &entry{r: r, rev: rev}
	c.opts.Log.Info("rollout created", "id", r.ID, "artifact", r.Spec.Artifact, "version", r.Spec.Version, "members", len(r.Members), "by", r.CreatedBy)
	c.poke()
	return r, nil
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Get returns rollout id.
func (c *Controller) Get(id string) (Rollout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.all[id]
	if !ok {
		return Rollout{}, fmt.Errorf("%w: %s", ErrNotFound, clip(id, 64))
	}
	return clone(e.r), nil
}

func clone(r Rollout) Rollout {
	r.Members = slices.Clone(r.Members)
	return r
}

// List returns every rollout, newest first.
func (c *Controller) List() []Rollout {
	c.mu.Lock()
	out := make([]Rollout, 0, len(c.all))
	for _, e := range c.all {
		out = append(out, clone(e.r))
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// act applies an operator action to rollout id under the lock, persists
// it and records its event.
func (c *Controller) act(ctx context.Context, id, evType string, fn func(r *Rollout) error) (Rollout, error) {
	c.mu.Lock()
	e, ok := c.all[id]
	if !ok {
		c.mu.Unlock()
		return Rollout{}, fmt.Errorf("%w: %s", ErrNotFound, clip(id, 64))
	}
	r := clone(e.r)
	if err := fn(&r); err != nil {
		c.mu.Unlock()
		return Rollout{}, err
	}
	r.Updated = c.opts.Now()
	if r.State.Active() {
		for _, o := range c.all {
			if o.r.ID != r.ID && o.r.Spec.Artifact == r.Spec.Artifact && o.r.State.Active() {
				c.mu.Unlock()
				return Rollout{}, fmt.Errorf("%w: rollout %s of %s is %s", ErrPrecondition, o.r.ID, o.r.Spec.Artifact, o.r.State)
			}
		}
	}
	rev, err := c.save(ctx, r, e.rev)
	if err == nil {
		e.r, e.rev = r, rev
	}
	c.mu.Unlock()
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			_ = c.reload(ctx, id)
		}
		return Rollout{}, err
	}
	by := actor.From(ctx)
	c.record(ctx, []Event{{Type: evType, Message: fmt.Sprintf("rollout %s: %s by %s", r.ID, strings.TrimPrefix(evType, "Rollout"), by)}})
	c.opts.Log.Info("rollout action", "id", r.ID, "action", evType, "by", by)
	c.poke()
	return clone(r), nil
}

func notIn(r *Rollout, action string, ok ...State) error {
	if slices.Contains(ok, r.State) {
		return nil
	}
	return fmt.Errorf("%w: cannot %s rollout %s: it is %s", ErrPrecondition, action, r.ID, r.State)
}

// Pause holds a pending or running rollout where it is.
func (c *Controller) Pause(ctx context.Context, id string) (Rollout, error) {
	return c.act(ctx, id, EventPaused, func(r *Rollout) error {
		if err := notIn(r, "pause", Pending, Running); err != nil {
			return err
		}
		r.State, r.Reason = Paused, "paused by "+actor.From(ctx)
		return nil
	})
}

// Resume continues a paused rollout; failures so far are accepted (they
// no longer count against the budget) and the progress deadline restarts.
func (c *Controller) Resume(ctx context.Context, id string) (Rollout, error) {
	return c.act(ctx, id, EventResumed, func(r *Rollout) error {
		if err := notIn(r, "resume", Paused); err != nil {
			return err
		}
		r.State, r.Reason, r.LastProgress = Running, "", c.opts.Now()
		r.Tolerated = r.Count(AgentFailed)
		if r.Started.IsZero() {
			r.State = Pending
		}
		return nil
	})
}

// Abort stops an active rollout for good; agents keep what they have.
func (c *Controller) Abort(ctx context.Context, id string) (Rollout, error) {
	return c.act(ctx, id, EventAborted, func(r *Rollout) error {
		if err := notIn(r, "abort", Pending, Running, Paused); err != nil {
			return err
		}
		r.State, r.Reason, r.Finished = Aborted, "aborted by "+actor.From(ctx), c.opts.Now()
		return nil
	})
}

// Rollback takes every agent the rollout changed back to its previous
// version, RollbackParallel at a time, without canary or soak.
func (c *Controller) Rollback(ctx context.Context, id string) (Rollout, error) {
	return c.act(ctx, id, EventRollingBack, func(r *Rollout) error {
		if err := notIn(r, "roll back", Pending, Running, Paused, Aborted, Completed); err != nil {
			return err
		}
		if r.RollingBack && r.State == Running {
			return fmt.Errorf("%w: rollout %s is already rolling back", ErrPrecondition, r.ID)
		}
		startRollback(r)
		r.Reason, r.Finished = "rollback by "+actor.From(ctx), time.Time{}
		return nil
	})
}

// Retry runs a halted, aborted or rolled back rollout again with the same
// membership and order: failed, rolled back and not reached agents go back
// to pending.
func (c *Controller) Retry(ctx context.Context, id string) (Rollout, error) {
	return c.act(ctx, id, EventRetried, func(r *Rollout) error {
		if err := notIn(r, "retry", Paused, Aborted, RolledBack); err != nil {
			return err
		}
		if len(r.Spec.RollbackTo) > 0 {
			return fmt.Errorf("%w: a rollback-only rollout cannot be retried", ErrPrecondition)
		}
		if c.opts.Yanks != nil && c.opts.Yanks.Yanked(r.Spec.Artifact, r.Spec.Version) {
			return fmt.Errorf("%w: %s %s is yanked", ErrPrecondition, r.Spec.Artifact, r.Spec.Version)
		}
		for i := range r.Members {
			m := &r.Members[i]
			if m.State == AgentSkipped && strings.HasPrefix(m.Reason, "pinned") {
				continue
			}
			if m.State != AgentPassed {
				m.Reset = m.Changed && m.State == AgentFailed
				m.State, m.Reason, m.LastLogLines, m.Reverting = AgentPending, "", nil, false
				m.Started, m.SoakStart, m.Finished = time.Time{}, time.Time{}, time.Time{}
			}
		}
		now := c.opts.Now()
		r.State, r.Reason, r.RollingBack, r.Tolerated, r.Wave = Running, "", false, 0, 0
		r.LastProgress, r.Finished = now, time.Time{}
		return nil
	})
}

// watcher is the fleet's event stream (*fleet.Fleet), when it has one:
// the controller steps on fleet changes as well as on its ticker.
type watcher interface {
	Watch(ctx context.Context, o fleet.WatchOptions, fn func(fleet.Event) error) error
}

// follow pokes the controller on every fleet event not its own, until ctx ends.
func (c *Controller) follow(ctx context.Context, w watcher) {
	for ctx.Err() == nil {
		_ = w.Watch(ctx, fleet.WatchOptions{Follow: true, Internal: true}, func(e fleet.Event) error {
			if !strings.HasPrefix(e.Type, "Rollout") {
				c.poke()
			}
			return nil
		})
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Run steps every active rollout each Interval, and on fleet changes,
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	if w, ok := c.opts.Fleet.(watcher); ok {
		done := make(chan struct{})
		wctx, stop := context.WithCancel(ctx)
		go func() { defer close(done); c.follow(wctx, w) }()
		defer func() { stop(); <-done }()
	}
	for {
		last := time.Now()
		c.Tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.wake:
			// Fleet changes come in bursts (a wave of thousands of agents
			// reporting their new version): step at most every
			// minStepGap on them, so that steps (each copies the fleet's
			// view and may save the rollout) do not run back to back and
			// crowd out heartbeats. The pokes meanwhile coalesce.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(last.Add(minStepGap))):
			}
		}
	}
}

// minStepGap is the least time between two steps caused by fleet events.
const minStepGap = 500 * time.Millisecond

// Tick steps every running or pending rollout once: persist the next
// state first, then apply the desired-version changes, then record events.
func (c *Controller) Tick(ctx context.Context) {
	if c.opts.Fence != nil {
		if _, ok := c.opts.Fence(); !ok {
			return // another master leads and steps
		}
	}
	c.mu.Lock()
	var ids []string
	for id, e := range c.all {
		if e.r.State == Pending || e.r.State == Running {
			ids = append(ids, id)
		}
	}
	c.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	sort.Strings(ids)
	c.prune(ctx)
	view := NewView(c.opts.Fleet.Agents())
	for _, id := range ids {
		if err := c.stepOne(ctx, id, view); err != nil {
			c.opts.Log.Warn("rollout step", "id", id, "err", err)
		}
	}
}

func (c *Controller) stepOne(ctx context.Context, id string, view View) error {
	var fence []store.Cond
	if c.opts.Fence != nil {
		var ok bool
		if fence, ok = c.opts.Fence(); !ok {
			return nil // not the leader (any more): the leader steps
		}
	}
	c.mu.Lock()
	e, ok := c.all[id]
	if !ok || (e.r.State != Pending && e.r.State != Running) {
		c.mu.Unlock()
		return nil
	}
	cur, rev := clone(e.r), e.rev
	c.mu.Unlock()
	next, changes, evs := Step(c.opts.Now(), cur, view)
	if len(evs) > 0 || !sameProgress(cur, next) {
		nrev, err := c.save(ctx, next, rev, fence...)
		if err != nil {
			if errors.Is(err, store.ErrConflict) {
				return c.reload(ctx, id)
			}
			return err
		}
		c.mu.Lock()
		if e2, ok := c.all[id]; ok && e2.rev == rev {
			e2.r, e2.rev = next, nrev
		}
		c.mu.Unlock()
	}
	mctx := actor.With(ctx, actor.Master)
	for _, ch := range changes {
		vc := fleet.VersionChange{AgentID: ch.AgentID}
		if ch.Artifact == ArtifactAgent {
			vc.AgentVersion = ch.Version
		} else {
			vc.StorageServerVersion = ch.Version
		}
		if _, err := c.opts.Fleet.SetDesiredVersion(mctx, vc); err != nil {
			c.opts.Log.Warn("rollout set version", "id", id, "agent", ch.AgentID, "version", ch.Version, "err", err)
		}
	}
	c.record(mctx, evs)
	return nil
}

// prune deletes the oldest finished rollouts beyond KeepFinished (each
// with a CAS on the revision read, and the fence), so that the table stays
// bounded however many rollouts an operator runs.
func (c *Controller) prune(ctx context.Context) {
	var fence []store.Cond
	if c.opts.Fence != nil {
		var ok bool
		if fence, ok = c.opts.Fence(); !ok {
			return
		}
	}
	type fin struct {
		id  string
		at  time.Time
		rev store.Revision
	}
	var done []fin
	c.mu.Lock()
	for id, e := range c.all {
		if !e.r.State.Active() {
			done = append(done, fin{id, later(e.r.Finished, e.r.Updated, e.r.Created), e.rev})
		}
	}
	c.mu.Unlock()
	over := len(done) - c.opts.KeepFinished
	if over <= 0 {
		return
	}
	sort.Slice(done, func(i, j int) bool {
		if !done[i].at.Equal(done[j].at) {
			return done[i].at.Before(done[j].at)
		}
		return done[i].id < done[j].id
	})
	for _, d := range done[:over] {
		key := []byte(d.id)
		conds := append([]store.Cond{store.IfRevision(store.TableRollouts, key, d.rev)}, fence...)
		if _, err := c.opts.Store.ApplyIf(ctx, conds, []store.Op{store.Delete(store.TableRollouts, key)}); err != nil {
			c.opts.Log.Warn("prune finished rollout", "id", d.id, "err", err)
			continue
		}
		c.mu.Lock()
		if e, ok := c.all[d.id]; ok && e.rev == d.rev {
			delete(c.all, d.id)
		}
		c.mu.Unlock()
		c.opts.Log.Info("finished rollout pruned", "id", d.id, "keep_finished", c.opts.KeepFinished)
	}
}

func later(ts ...time.Time) time.Time {
	var t time.Time
	for _, x := range ts {
		if x.After(t) {
			t = x
		}
	}
	return t
}

// Follow keeps the controller's rollouts equal to the store's until ctx
// ends: with several masters, a rollout created, paused or stepped on one
// master shows on every other (and the next leader continues it where its
// predecessor stopped). It scans the table, then watches it from the scan's
// revision; a watch that ends (compaction, a slow reader) starts over.
func (c *Controller) Follow(ctx context.Context) error {
	for ctx.Err() == nil {
		err := c.followOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.opts.Log.Warn("follow rollouts", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (c *Controller) followOnce(ctx context.Context) error {
	rev, err := c.opts.Store.Revision(ctx)
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	err = c.opts.Store.Scan(ctx, store.TableRollouts, func(k, _ []byte) error {
		ids[string(k)] = true
		return nil
	})
	if err != nil {
		return err
	}
	for id := range ids {
		if err := c.reload(ctx, id); err != nil {
			return err
		}
	}
	c.mu.Lock()
	for id, e := range c.all {
		// Gone from the store — unless written after the scan (a rollout
		// started here meanwhile): the watch below brings what follows.
		if !ids[id] && e.rev <= rev {
			delete(c.all, id)
		}
	}
	c.mu.Unlock()
	ch, err := c.opts.Store.Watch(ctx, store.TableRollouts, rev+1)
	if err != nil {
		return err
	}
	for ch := range ch {
		id := string(ch.Key)
		if ch.Deleted() {
			c.mu.Lock()
			delete(c.all, id)
			c.mu.Unlock()
			continue
		}
		r, err := decode(ch.Value)
		if err != nil {
			c.opts.Log.Warn("undecodable rollout in the store", "id", clip(id, 64), "err", err)
			continue
		}
		c.mu.Lock()
		if e, ok := c.all[id]; !ok || e.rev < ch.Rev {
			c.all[id] = &entry{r: r, rev: ch.Rev}
			if r.State == Pending || r.State == Running {
				c.poke()
			}
		}
		c.mu.Unlock()
	}
	return nil
}

func sameProgress(a, b Rollout) bool {
	if a.State != b.State || a.RollingBack != b.RollingBack || a.Wave != b.Wave || !a.Updated.Equal(b.Updated) {
		return false
	}
	return slices.EqualFunc(a.Members, b.Members, func(x, y Member) bool {
		return x.State == y.State && x.Reverting == y.Reverting
	})
}

func (c *Controller) record(ctx context.Context, evs []Event) {
	for _, ev := range evs {
		if err := c.opts.Fleet.Record(ctx, ev.Type, ev.AgentID, ev.Message); err != nil {
			c.opts.Log.Warn("rollout event", "type", ev.Type, "err", err)
		}
	}
}
