// Package ratelimit keeps the master's request rate limits (issue 12):
// keyed token buckets (golang.org/x/time/rate) for each authenticated
// identity, each source address and each address's enrollment attempts, the
// gRPC interceptors and the HTTP middleware that apply them, and the parser
// of the "20/s:40" notation of the sutra-master flags.
//
// Threat model. A client may call as fast as it likes and from as many
// connections as it likes; what it cannot do is make the master spend
// unbounded work or memory on it, or guess a join token secret:
//
//   - every call first takes a token from its source address's bucket
//     (before authentication, so that floods of unauthenticated calls are cut
//     before the token check and the handler); the default is generous
//     because a whole fleet may sit behind one NAT address;
//   - an authenticated call then takes a token from its identity's bucket
//     (an agent id from a verified client certificate, or "operator"); the
//     identity is only trusted after authentication, so no one can drain
//     another agent's bucket by claiming its id;
//   - enrollment failures are counted per source address in a much tighter
//     bucket: an attempt is refused without even looking at the join token
//     while the address's bucket is empty, and every refused token takes
//     FailureCost tokens from it (going into debt when attempts race), so
//     a token secret cannot be brute-forced. Successful enrollments are not
//     counted there, so ten thousand nodes behind one NAT can enroll at once.
//
// Over the limit, gRPC answers RESOURCE_EXHAUSTED with a RetryInfo detail
// and HTTP answers 429 with Retry-After. Client-supplied headers such as
// X-Forwarded-For are never trusted for the address.
//
// Memory is bounded: a Store keeps at most MaxKeys buckets, dropping the
// least recently used idle (full) buckets first, and when every bucket is in
// use it forgets the least recently used one (which starts full again: the
// limit is forgiving under an address flood, never refusing a newcomer).
package ratelimit

import (
	"container/list"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate is one token bucket setting: N events per Per, with bursts of up to
// Burst events. The zero value is "unset" (Config takes the default); Off
// disables the limit.
type Rate struct {
	N     float64
	Per   time.Duration
	Burst int
	Off   bool
}

// Limits of the notation, so that a typo cannot make a bucket that never
// refills or that holds more than the process can count.
const (
	maxN     = 1e9
	maxBurst = 1e9
)

// Parse reads a rate: "off", or "N/UNIT[:BURST]" where N is a positive
// number, UNIT one of s, m, h (second, minute, hour; "sec", "min", "hour"
// are accepted) and BURST a positive integer (default: twice N, at least 1).
// Examples: "20/s:40", "10/m:20", "0.5/s".
func Parse(s string) (Rate, error) {
	orig := s
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "off") {
		return Rate{Off: true}, nil
	}
	bad := func(why string) (Rate, error) {
		return Rate{}, fmt.Errorf("rate %.64q: %s (want N/s, N/m or N/h with an optional :BURST, like 20/s:40, or off)", orig, why)
	}
	if len(s) > 64 {
		return bad("too long")
	}
	spec, burstStr, hasBurst := strings.Cut(s, ":")
	nStr, unit, ok := strings.Cut(spec, "/")
	if !ok {
		return bad("no /UNIT")
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(nStr), 64)
	if err != nil || math.IsNaN(n) || n <= 0 || n > maxN {
		return bad(fmt.Sprintf("N must be a number above 0 and at most %g", float64(maxN)))
	}
	var per time.Duration
	switch strings.ToLower(strings.TrimSpace(unit)) {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		return bad("UNIT must be s, m or h")
	}
	burst := int(min(math.Ceil(2*n), maxBurst))
	if hasBurst {
		b, err := strconv.Atoi(strings.TrimSpace(burstStr))
		if err != nil || b < 1 || b > maxBurst {
			return bad(fmt.Sprintf("BURST must be a whole number from 1 to %d", int(maxBurst)))
		}
		burst = b
	}
	return Rate{N: n, Per: per, Burst: burst}, nil
}

// String is r in Parse's notation ("" for the zero Rate).
func (r Rate) String() string {
	switch {
	case r.Off:
		return "off"
	case r.Per == 0:
		return ""
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
	if unit == "" {
		return fmt.Sprintf("%s/%s:%d", strconv.FormatFloat(r.N, 'g', -1, 64), r.Per, r.Burst)
	}
	return fmt.Sprintf("%s/%s:%d", strconv.FormatFloat(r.N, 'g', -1, 64), unit, r.Burst)
}

// Limit is r's refill rate in events per second.
func (r Rate) Limit() rate.Limit {
	if r.Off || r.Per <= 0 {
		return rate.Inf
	}
	return rate.Limit(r.N / r.Per.Seconds())
}

// Validate reports a Rate that Parse would not make.
func (r Rate) Validate() error {
	if r.Off || r == (Rate{}) {
		return nil
	}
	if math.IsNaN(r.N) || r.N <= 0 || r.N > maxN || r.Per <= 0 || r.Burst < 1 || r.Burst > maxBurst {
		return fmt.Errorf("rate %v is out of range (N above 0, a positive period, burst 1..%d)", r, int(maxBurst))
	}
	return nil
}

// Defaults. They never bite a healthy fleet: an agent calls about once per
// heartbeat interval (5 s), so 10,000 agents behind one NAT address make
// 2,000 calls a second, and 10,000 registrations at once after a master
// restart fit in the address burst.
var (
	// DefaultIdentity limits each agent and the operator.
	DefaultIdentity = Rate{N: 20, Per: time.Second, Burst: 40}
	// DefaultAddress limits each source address (IPv6: each /64).
	DefaultAddress = Rate{N: 5000, Per: time.Second, Burst: 20000}
	// DefaultEnroll limits failed enrollment attempts per source address.
	DefaultEnroll = Rate{N: 10, Per: time.Minute, Burst: 20}
)

// FailureCost is what a refused join token takes from its address's
// enrollment bucket: a failure counts twice.
const FailureCost = 2

// DefaultMaxKeys bounds each Store.
const DefaultMaxKeys = 100_000

// Config is the three limits; zero Rates take the defaults.
type Config struct {
	Identity, Address, Enroll Rate
	// MaxKeys bounds the buckets of each kind. Zero: DefaultMaxKeys.
	MaxKeys int
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, r := range []struct {
		name string
		r    Rate
	}{{"identity", c.Identity}, {"address", c.Address}, {"enroll", c.Enroll}} {
		if err := r.r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s rate limit: %w", r.name, err))
		}
	}
	if c.MaxKeys < 0 {
		errs = append(errs, fmt.Errorf("rate limit MaxKeys %d is negative", c.MaxKeys))
	}
	return errors.Join(errs...)
}

// WithDefaults fills the unset fields.
func (c Config) WithDefaults() Config {
	if c.Identity == (Rate{}) {
		c.Identity = DefaultIdentity
	}
	if c.Address == (Rate{}) {
		c.Address = DefaultAddress
	}
	if c.Enroll == (Rate{}) {
		c.Enroll = DefaultEnroll
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Limits are the master's three stores; a nil *Store is "off". Build them
// once (New) and share them between the gRPC and HTTP servers, so that an
// address's budget is one budget.
type Limits struct {
	Identity, Address, Enroll *Store
}

// New builds the stores of c (defaults filled in).
func New(c Config) (*Limits, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.WithDefaults()
	return &Limits{
		Identity: NewStore(c.Identity, c.MaxKeys, c.Now),
		Address:  NewStore(c.Address, c.MaxKeys, c.Now),
		Enroll:   NewStore(c.Enroll, c.MaxKeys, c.Now),
	}, nil
}

// Decision is the answer of a Store.
type Decision struct {
	// OK: go ahead.
	OK bool
	// RetryAfter is how long until one token is available again (when !OK).
	RetryAfter time.Duration
}

// shards spreads the keys over independent locks.
const shards = 16

// Store is a set of token buckets of one Rate, one per key, safe for
// concurrent use. A nil *Store allows everything.
type Store struct {
	rate   Rate
	limit  rate.Limit
	now    func() time.Time
	seed   maphash.Seed
	shards [shards]shard
}

type shard struct {
	mu      sync.Mutex
	max     int
	buckets map[string]*list.Element
	lru     list.List // of *bucket, most recently used first
}

type bucket struct {
	key  string
	lim  *rate.Limiter
	used time.Time
}

// NewStore keeps buckets of r for at most maxKeys keys (0:
// DefaultMaxKeys); now is the clock (nil: time.Now). A Rate that is Off or
// unset gives a nil Store (no limit).
func NewStore(r Rate, maxKeys int, now func() time.Time) *Store {
	if r.Off || r.Per <= 0 || r.Burst < 1 {
		return nil
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if now == nil {
		now = time.Now
	}
	s := &Store{rate: r, limit: r.Limit(), now: now, seed: maphash.MakeSeed()}
	per := max(1, (maxKeys+shards-1)/shards)
	for i := range s.shards {
		s.shards[i].max = per
		s.shards[i].buckets = map[string]*list.Element{}
	}
	return s
}

// Rate is the store's setting.
func (s *Store) Rate() Rate {
	if s == nil {
		return Rate{Off: true}
	}
	return s.rate
}

// Len is the number of buckets kept.
func (s *Store) Len() int {
	if s == nil {
		return 0
	}
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

// Allow takes one token from key's bucket if it has one.
func (s *Store) Allow(key string) Decision {
	if s == nil {
		return Decision{OK: true}
	}
	now := s.now()
	var d Decision
	s.with(key, now, func(l *rate.Limiter) {
		r := l.ReserveN(now, 1)
		if !r.OK() {
			d = Decision{RetryAfter: s.rate.Per}
			return
		}
		if wait := r.DelayFrom(now); wait > 0 {
			r.CancelAt(now)
			d = Decision{RetryAfter: wait}
			return
		}
		d = Decision{OK: true}
	})
	return d
}

// Peek reports whether key's bucket holds a token, without taking it.
func (s *Store) Peek(key string) Decision {
	if s == nil {
		return Decision{OK: true}
	}
	now := s.now()
	var d Decision
	s.with(key, now, func(l *rate.Limiter) {
		if t := l.TokensAt(now); t < 1 {
			d = Decision{RetryAfter: s.wait(1 - t)}
			return
		}
		d = Decision{OK: true}
	})
	return d
}

// Charge takes n tokens from key's bucket whether it has them or not: a
// bucket may go into debt, which the refill pays back before it allows
// anything again (n is capped at the burst).
func (s *Store) Charge(key string, n int) {
	if s == nil || n <= 0 {
		return
	}
	now := s.now()
	s.with(key, now, func(l *rate.Limiter) {
		l.ReserveN(now, min(n, s.rate.Burst))
	})
}

// wait is how long the refill takes to produce tokens.
func (s *Store) wait(tokens float64) time.Duration {
	d := time.Duration(math.Ceil(tokens / float64(s.limit) * float64(time.Second)))
	return max(d, time.Millisecond)
}

// with runs f on key's bucket (made full if new) under its shard's lock.
func (s *Store) with(key string, now time.Time, f func(*rate.Limiter)) {
	sh := &s.shards[maphash.String(s.seed, key)%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.buckets[key]; ok {
		b := e.Value.(*bucket)
		b.used = now
		sh.lru.MoveToFront(e)
		f(b.lim)
		return
	}
	s.evict(sh, now)
	b := &bucket{key: key, lim: rate.NewLimiter(s.limit, s.rate.Burst), used: now}
	sh.buckets[key] = sh.lru.PushFront(b)
	f(b.lim)
}

// evict makes room for one more bucket in sh: it drops up to a few least
// recently used buckets that have refilled completely (forgetting them loses
// nothing), and if sh is still full, its least recently used bucket.
func (s *Store) evict(sh *shard, now time.Time) {
	for range 4 {
		e := sh.lru.Back()
		if e == nil {
			return
		}
		b := e.Value.(*bucket)
		if b.lim.TokensAt(now) < float64(s.rate.Burst) {
			break
		}
		sh.lru.Remove(e)
		delete(sh.buckets, b.key)
	}
	for len(sh.buckets) >= sh.max {
		e := sh.lru.Back()
		b := e.Value.(*bucket)
		sh.lru.Remove(e)
		delete(sh.buckets, b.key)
	}
}
