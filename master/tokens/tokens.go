// Package tokens keeps the master's join tokens (internal/jointoken): it
// creates them, lists them, removes them and consumes one use of a token
// when an agent enrolls with it. It is not wired into the master yet
// (issue 12).
//
// Trust model. A join token authorizes its holder to enroll agents, as many
// times as its uses allow, until it expires or an operator removes it.
// Only Create ever sees the secret, and returns it once; the store holds
// the SHA-256 of the secret (see internal/jointoken for why that is
// enough), so a copy of grid.db or of a backup cannot enroll anything.
// Consume refuses an unknown, removed, expired, exhausted or wrong token
// with the same ErrRefused, after the same work (a constant-time hash
// comparison, against a dummy hash when there is no record), so a caller
// learns nothing about which tokens exist; the reason is logged for the
// operator with the token id, never the secret. Uses are counted with a
// compare-and-swap on the record's revision (store.ApplyIf with
// IfRevision): two agents racing for the last use of a single-use token
// cannot both get it, whichever master or goroutine serves them.
//
// Records that only grow are bugs: the table is bounded by MaxTokens, and a
// token that can no longer be used (expired or exhausted) is deleted
// Options.Retain after it died (by Prune, and by Create when the table is
// full); until then `sutra tokens` shows it as expired or exhausted.
package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/store"
)

// Table is the store table of the tokens, keyed by token id.
const Table = store.TableTokens

// Bounds and defaults.
const (
	DefaultTTL  = 24 * time.Hour
	MinTTL      = time.Minute
	MaxTTL      = 365 * 24 * time.Hour
	DefaultUses = 1
	MaxUses     = 100000
	// DefaultMaxTokens bounds the table (live and retained tokens).
	DefaultMaxTokens = 1000
	// DefaultRetain is how long a dead token stays listed.
	DefaultRetain = 7 * 24 * time.Hour
	// maxAttempts bounds Consume's compare-and-swap retries.
	maxAttempts = 16
)

// Errors callers act on.
var (
	// ErrRefused: Consume refused the token (unknown, removed, expired,
	// exhausted or wrong secret: the log says which).
	ErrRefused = errors.New("join token refused")
	// ErrNotFound: Remove of an id that does not exist.
	ErrNotFound = errors.New("no such join token")
	// ErrInvalid: a Spec out of bounds.
	ErrInvalid = errors.New("invalid join token request")
	// ErrTooMany: the table holds MaxTokens tokens.
	ErrTooMany = errors.New("too many join tokens")
)

// Store is the part of master/store's Store this package uses.
type Store interface {
	ApplyIf(ctx context.Context, conds []store.Cond, ops []store.Op) (store.Revision, error)
	Get(ctx context.Context, table string, key []byte) ([]byte, store.Revision, error)
	Scan(ctx context.Context, table string, fn func(key, value []byte) error) error
}

// Options configure New.
type Options struct {
	// Store persists the tokens (the fleet's grid.db). Required.
	Store Store
	// Fingerprint is the CA pin new tokens carry (pki.PKI.Fingerprint). Required.
	Fingerprint string
	// MaxTokens bounds the table; 0: DefaultMaxTokens.
	MaxTokens int
	// Retain is how long a dead token stays listed; 0: DefaultRetain.
	Retain time.Duration
	// Logger; nil: discard.
	Logger *slog.Logger
}

// Validate reports every problem of o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Store == nil {
		errs = append(errs, errors.New("tokens: Store is nil"))
	}
	if err := jointoken.ValidateFingerprint(o.Fingerprint); err != nil {
		errs = append(errs, fmt.Errorf("tokens: %w", err))
	}
	if o.MaxTokens < 0 {
		errs = append(errs, fmt.Errorf("tokens: MaxTokens %d is negative", o.MaxTokens))
	}
	if o.Retain < 0 {
		errs = append(errs, fmt.Errorf("tokens: Retain %s is negative", o.Retain))
	}
	return errors.Join(errs...)
}

// Tokens is the token registry. Its methods are safe for concurrent use.
type Tokens struct {
	st     Store
	fp     string
	max    int
	retain time.Duration
	log    *slog.Logger
}

// New returns the registry over o.Store.
func New(o Options) (*Tokens, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.MaxTokens == 0 {
		o.MaxTokens = DefaultMaxTokens
	}
	if o.Retain == 0 {
		o.Retain = DefaultRetain
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Tokens{st: o.Store, fp: o.Fingerprint, max: o.MaxTokens, retain: o.Retain, log: o.Logger}, nil
}

// Spec is what the operator asks for in `sutra tokens create`.
type Spec struct {
	// TTL is how long the token can be used; 0: DefaultTTL.
	TTL time.Duration
	// Uses is how many enrollments it allows; 0: DefaultUses.
	Uses int
	// Labels are given to every agent enrolled with the token (bounded
	// like agent labels: internal/limits).
	Labels map[string]string
	// CreatedBy names the operator, for the record and the events.
	CreatedBy string
}

// Validate reports every problem of s at once.
func (s Spec) Validate() error {
	var errs []error
	if s.TTL != 0 && (s.TTL < MinTTL || s.TTL > MaxTTL) {
		errs = append(errs, fmt.Errorf("%w: ttl %s: want %s to %s", ErrInvalid, s.TTL, MinTTL, MaxTTL))
	}
	if s.Uses < 0 || s.Uses > MaxUses {
		errs = append(errs, fmt.Errorf("%w: uses %d: want 1 to %d", ErrInvalid, s.Uses, MaxUses))
	}
	if err := limits.Labels(s.Labels); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	if err := limits.Text("created by", s.CreatedBy, limits.MaxTextLen); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	return errors.Join(errs...)
}

// Info describes a token; it never holds the secret.
type Info struct {
	ID        string            `json:"id"`
	Created   time.Time         `json:"created"`
	Expires   time.Time         `json:"expires"`
	Uses      int               `json:"uses"`
	Used      int               `json:"used"`
	LastUsed  time.Time         `json:"last_used,omitzero"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedBy string            `json:"created_by,omitempty"`
}

// State names a token's state at now: "active", "expired" or "exhausted".
func (i Info) State(now time.Time) string {
	switch {
	case i.Used >= i.Uses:
		return "exhausted"
	case !now.Before(i.Expires):
		return "expired"
	}
	return "active"
}

// died is when the token stopped being usable, or zero if it is active.
func (i Info) died(now time.Time) time.Time {
	switch i.State(now) {
	case "exhausted":
		if !i.LastUsed.IsZero() && i.LastUsed.Before(i.Expires) {
			return i.LastUsed
		}
		return i.Expires
	case "expired":
		return i.Expires
	}
	return time.Time{}
}

// record is the stored form: Info and the hash of the secret.
type record struct {
	Version int    `json:"v"`
	Hash    []byte `json:"hash"`
	Info
}

const recordVersion = 1

func decode(key, value []byte) (record, error) {
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return record{}, fmt.Errorf("tokens: record %q: %w", key, err)
	}
	if r.Version != recordVersion || len(r.Hash) != 32 || r.ID != string(key) {
		return record{}, fmt.Errorf("tokens: record %q: version %d, %d-byte hash, id %q: not a token record of this version",
			key, r.Version, len(r.Hash), r.ID)
	}
	return r, nil
}

// Create makes a token for spec at now and stores its hash. The returned
// token is the only copy of its secret.
func (t *Tokens) Create(ctx context.Context, spec Spec, now time.Time) (jointoken.Token, Info, error) {
	if err := spec.Validate(); err != nil {
		return jointoken.Token{}, Info{}, err
	}
	if spec.TTL == 0 {
		spec.TTL = DefaultTTL
	}
	if spec.Uses == 0 {
		spec.Uses = DefaultUses
	}
	n, err := t.count(ctx)
	if err != nil {
		return jointoken.Token{}, Info{}, err
	}
	if n >= t.max {
		if _, err := t.Prune(ctx, now); err != nil {
			return jointoken.Token{}, Info{}, err
		}
		if n, err = t.count(ctx); err != nil {
			return jointoken.Token{}, Info{}, err
		}
		if n >= t.max {
			return jointoken.Token{}, Info{}, fmt.Errorf("%w: %d tokens (at most %d): remove unused ones with `sutra tokens rm ID`", ErrTooMany, n, t.max)
		}
	}
	for range maxAttempts {
		tok, err := jointoken.Generate(t.fp)
		if err != nil {
			return jointoken.Token{}, Info{}, fmt.Errorf("tokens: %w", err)
		}
		r := record{Version: recordVersion, Hash: tok.Hash(), Info: Info{
			ID: tok.ID, Created: now.UTC(), Expires: now.Add(spec.TTL).UTC(), Uses: spec.Uses,
			Labels: cloneLabels(spec.Labels), CreatedBy: spec.CreatedBy,
		}}
		val, err := json.Marshal(r)
		if err != nil {
			return jointoken.Token{}, Info{}, fmt.Errorf("tokens: %w", err)
		}
		key := []byte(tok.ID)
		_, err = t.st.ApplyIf(ctx, []store.Cond{store.IfAbsent(Table, key)}, []store.Op{store.Put(Table, key, val)})
		if errors.Is(err, store.ErrConflict) {
			continue // an id collision (1 in 36^12): draw another
		}
		if err != nil {
			return jointoken.Token{}, Info{}, fmt.Errorf("tokens: create: %w", err)
		}
		t.log.Info("join token created", "token", tok.ID, "uses", r.Uses, "expires", r.Expires, "labels", r.Labels, "by", r.CreatedBy)
		return tok, r.Info, nil
	}
	return jointoken.Token{}, Info{}, errors.New("tokens: create: could not draw an unused id")
}

func (t *Tokens) count(ctx context.Context) (int, error) {
	n := 0
	err := t.st.Scan(ctx, Table, func(_, _ []byte) error { n++; return nil })
	if err != nil {
		return 0, fmt.Errorf("tokens: %w", err)
	}
	return n, nil
}

// List returns every stored token, oldest first.
func (t *Tokens) List(ctx context.Context) ([]Info, error) {
	var out []Info
	err := t.st.Scan(ctx, Table, func(k, v []byte) error {
		r, err := decode(k, v)
		if err != nil {
			return err
		}
		out = append(out, r.Info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tokens: list: %w", err)
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Remove deletes token id: it can no longer be used.
func (t *Tokens) Remove(ctx context.Context, id string) error {
	if err := jointoken.ValidateID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	key := []byte(id)
	_, rev, err := t.st.Get(ctx, Table, key)
	if err != nil {
		return fmt.Errorf("tokens: remove %s: %w", id, err)
	}
	if rev == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if _, err := t.st.ApplyIf(ctx, nil, []store.Op{store.Delete(Table, key)}); err != nil {
		return fmt.Errorf("tokens: remove %s: %w", id, err)
	}
	t.log.Info("join token removed", "token", id)
	return nil
}

// Prune deletes the tokens dead (expired or exhausted) for longer than
// Options.Retain at now, and returns how many.
func (t *Tokens) Prune(ctx context.Context, now time.Time) (int, error) {
	var ops []store.Op
	err := t.st.Scan(ctx, Table, func(k, v []byte) error {
		r, err := decode(k, v)
		if err != nil {
			t.log.Warn("dropping an undecodable join token record", "token", string(k), "err", err)
			ops = append(ops, store.Delete(Table, slices.Clone(k)))
			return nil
		}
		if d := r.died(now); !d.IsZero() && now.Sub(d) > t.retain {
			ops = append(ops, store.Delete(Table, slices.Clone(k)))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("tokens: prune: %w", err)
	}
	if len(ops) == 0 {
		return 0, nil
	}
	if _, err := t.st.ApplyIf(ctx, nil, ops); err != nil {
		return 0, fmt.Errorf("tokens: prune: %w", err)
	}
	t.log.Info("dead join tokens deleted", "count", len(ops))
	return len(ops), nil
}

// dummyHash is compared against when there is no record, so that an
// unknown id costs the same hash and comparison as a known one.
var dummyHash = jointoken.Hash(make([]byte, jointoken.SecretSize))

// Consume spends one use of token id if secret is its secret and it is
// neither expired nor exhausted at now, and returns the token's Info after
// the use. Every refusal is ErrRefused; the log says why.
func (t *Tokens) Consume(ctx context.Context, id string, secret []byte, now time.Time) (Info, error) {
	refuse := func(reason string) (Info, error) {
		jointoken.VerifySecret(dummyHash, secret) // the same work as a real check
		t.log.Warn("join token refused", "token", id, "reason", reason)
		return Info{}, ErrRefused
	}
	if jointoken.ValidateID(id) != nil {
		id = "<malformed>" // never log what may be anything
		return refuse("malformed id")
	}
	key := []byte(id)
	for range maxAttempts {
		val, rev, err := t.st.Get(ctx, Table, key)
		if err != nil {
			return Info{}, fmt.Errorf("tokens: consume %s: %w", id, err)
		}
		if rev == 0 {
			return refuse("unknown or removed")
		}
		r, err := decode(key, val)
		if err != nil {
			t.log.Error("join token record does not decode", "token", id, "err", err)
			return refuse("undecodable record")
		}
		ok := jointoken.VerifySecret(r.Hash, secret)
		switch {
		case !ok:
			t.log.Warn("join token refused", "token", id, "reason", "wrong secret")
			return Info{}, ErrRefused
		case r.Used >= r.Uses:
			t.log.Warn("join token refused", "token", id, "reason", "exhausted", "uses", r.Uses)
			return Info{}, ErrRefused
		case !now.Before(r.Expires):
			t.log.Warn("join token refused", "token", id, "reason", "expired", "expired_at", r.Expires)
			return Info{}, ErrRefused
		}
		r.Used++
		r.LastUsed = now.UTC()
		nv, err := json.Marshal(r)
		if err != nil {
			return Info{}, fmt.Errorf("tokens: consume %s: %w", id, err)
		}
		_, err = t.st.ApplyIf(ctx, []store.Cond{store.IfRevision(Table, key, rev)}, []store.Op{store.Put(Table, key, nv)})
		if errors.Is(err, store.ErrConflict) {
			continue // another use or a removal in between: read again
		}
		if err != nil {
			return Info{}, fmt.Errorf("tokens: consume %s: %w", id, err)
		}
		t.log.Info("join token used", "token", id, "used", r.Used, "uses", r.Uses)
		r.Labels = cloneLabels(r.Labels)
		return r.Info, nil
	}
	return Info{}, fmt.Errorf("tokens: consume %s: too much contention, try again", id)
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
