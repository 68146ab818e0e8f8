// Package masters chooses which of several masters an agent talks to
// (issue 16: several masters on one shared store, any master accepts any
// agent).
//
// The list comes from agent.master_host, a comma-separated list of
// host:port (ParseHosts, the one definition of its syntax). A host name
// that resolves to several addresses counts as several masters; Refresh
// re-resolves the names (bounded to MaxHosts addresses in all). Each
// Endpoint keeps the configured host:port beside the address dialled, so
// TLS still checks the master's certificate against the configured name.
//
// Policy (a pure state machine: no goroutines or sleeps; the clock and the
// random source are injected):
//   - the initial choice is random, so a fleet spreads over the masters from
//     its first start;
//   - sticky: Current does not change while the master works;
//   - Failed(e) moves to another endpoint chosen at random among the others
//     (not "the next one": the agents of a dead master spread evenly over
//     the survivors), preferring those not backing off, and returns how long
//     to wait before calling it: each endpoint has its own exponential
//     backoff with full jitter (capped, default 30 s), so a dead master is
//     not hammered while the fleet tries the others.
package masters

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxHosts bounds the configured entries and the resolved addresses.
const MaxHosts = 16

// maxEntryLen bounds one host:port entry (a DNS name is at most 253 bytes).
const maxEntryLen = 300

// ParseHosts parses a comma-separated list of host:port (1 to MaxHosts
// entries; blanks around entries are trimmed; duplicates are dropped,
// keeping the first). The error names the entry at fault.
func ParseHosts(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("is empty (accepted: host:port, or a comma-separated list like \"a:7000,b:7000\")")
	}
	if n := strings.Count(s, ",") + 1; n > MaxHosts*4 {
		return nil, fmt.Errorf("has %d entries (accepted: at most %d)", n, MaxHosts)
	}
	var out []string
	seen := map[string]bool{}
	entries := strings.Split(s, ",")
	for i, raw := range entries {
		e := strings.TrimSpace(raw)
		if e == "" {
			return nil, fmt.Errorf("entry %d is empty (accepted: host:port entries separated by commas)", i+1)
		}
		if msg := CheckHostPort(e); msg != "" {
			if len(entries) == 1 {
				return nil, fmt.Errorf("%s (accepted: host:port, e.g. \"localhost:7000\", or a comma-separated list of them)", msg)
			}
			return nil, fmt.Errorf("entry %d %.80q %s (accepted: host:port, e.g. \"localhost:7000\")", i+1, e, msg)
		}
		key := strings.ToLower(e)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, e)
	}
	if len(out) > MaxHosts {
		return nil, fmt.Errorf("has %d entries (accepted: at most %d)", len(out), MaxHosts)
	}
	return out, nil
}

// CheckHostPort returns "" when hp is host:port, else what is wrong.
func CheckHostPort(hp string) string {
	if len(hp) > maxEntryLen {
		return "is too long"
	}
	if strings.Contains(hp, "://") {
		return "is a URL, not host:port"
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "is not host:port"
	}
	if host == "" {
		return "has no host"
	}
	for _, r := range host {
		if r <= ' ' || r == 0x7f || r == '/' || r == '@' || r == '?' || r == '#' {
			return "has an invalid host"
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '+' {
		return "has an invalid port"
	}
	return ""
}

// Endpoint is one master to dial.
type Endpoint struct {
	// Host is the configured host:port: the TLS server name (its host
	// part) and what logs and the binary URL name.
	Host string
	// Addr is the address dialled: Host itself, or one address Host's name
	// resolved to (ip:port).
	Addr string
}

func (e Endpoint) String() string {
	if e.Addr == e.Host {
		return e.Host
	}
	return e.Host + " (" + e.Addr + ")"
}

// Resolver resolves a host name to addresses (net.Resolver.LookupHost).
type Resolver func(host string) ([]string, error)

// Options configures a Set.
type Options struct {
	// Hosts are the configured host:port entries (ParseHosts). Required.
	Hosts []string
	// BackoffMin and BackoffMax bound each endpoint's full-jitter backoff
	// (defaults 1 s and 30 s).
	BackoffMin, BackoffMax time.Duration
	// Seed seeds the random source (0: crypto/rand).
	Seed uint64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

type health struct {
	fails int
	until time.Time
}

// Set is the list of masters and the one in use. Safe for concurrent use.
type Set struct {
	opts Options

	mu     sync.Mutex
	rnd    *rand.Rand
	eps    []Endpoint
	cur    int
	health map[string]health // by Endpoint.Addr
}

// New returns a Set over opts.Hosts (unresolved: each entry is one
// endpoint until Refresh) with a random current endpoint.
func New(opts Options) (*Set, error) {
	if len(opts.Hosts) == 0 || len(opts.Hosts) > MaxHosts {
		return nil, fmt.Errorf("masters: want 1 to %d hosts, got %d", MaxHosts, len(opts.Hosts))
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 30 * time.Second
	}
	opts.BackoffMax = max(opts.BackoffMax, opts.BackoffMin)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	seed := opts.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	s := &Set{opts: opts, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), health: map[string]health{}}
	for _, h := range opts.Hosts {
		s.eps = append(s.eps, Endpoint{Host: h, Addr: h})
	}
	s.cur = s.rnd.IntN(len(s.eps))
	return s, nil
}

// Current is the endpoint in use.
func (s *Set) Current() Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eps[s.cur]
}

// Endpoints returns every endpoint.
func (s *Set) Endpoints() []Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Endpoint(nil), s.eps...)
}

// Len is the number of endpoints.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.eps)
}

// Succeeded records that e answered: its backoff starts over.
func (s *Set) Succeeded(e Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.health, e.Addr)
}

// Failed records that e is unreachable, makes another endpoint current
// (random among the others, preferring those not backing off; e itself
// when it is the only one) and returns it with how long to wait before
// calling it. Failing an endpoint that is no longer current (a late
// report) only records the failure.
func (s *Set) Failed(e Endpoint) (Endpoint, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	h := s.health[e.Addr]
	h.fails++
	h.until = now.Add(s.backoff(h.fails - 1))
	s.health[e.Addr] = h
	if s.eps[s.cur] != e {
		return s.eps[s.cur], s.wait(s.eps[s.cur], now)
	}
	var ready, others []int
	for i, x := range s.eps {
		if x.Addr == e.Addr {
			continue
		}
		others = append(others, i)
		if !now.Before(s.health[x.Addr].until) {
			ready = append(ready, i)
		}
	}
	switch {
	case len(ready) > 0:
		s.cur = ready[s.rnd.IntN(len(ready))]
	case len(others) > 0:
		// Everyone is backing off: the one free soonest (ties at random).
		best := []int{others[0]}
		for _, i := range others[1:] {
			switch u, b := s.health[s.eps[i].Addr].until, s.health[s.eps[best[0]].Addr].until; {
			case u.Before(b):
				best = []int{i}
			case u.Equal(b):
				best = append(best, i)
			}
		}
		s.cur = best[s.rnd.IntN(len(best))]
	}
	return s.eps[s.cur], s.wait(s.eps[s.cur], now)
}

// Wait is how long e is still backing off (0: it may be called now).
func (s *Set) Wait(e Endpoint) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wait(e, s.opts.Now())
}

func (s *Set) wait(e Endpoint, now time.Time) time.Duration {
	return max(0, s.health[e.Addr].until.Sub(now))
}

// backoff is uniform in [0, min(max, min·2^n)] (full jitter).
func (s *Set) backoff(n int) time.Duration {
	ceil := s.opts.BackoffMax
	if n < 30 {
		if c := s.opts.BackoffMin << uint(n); c > 0 && c < ceil {
			ceil = c
		}
	}
	return time.Duration(s.rnd.Int64N(int64(ceil) + 1))
}

// Refresh resolves the configured host names again (resolve nil: no
// resolution). A name that resolves to several addresses becomes one
// endpoint per address; a name that does not resolve stays one endpoint
// dialled by name; IP literals stay as they are. At most MaxHosts endpoints
// are kept. The current endpoint stays current when it is still listed,
// else a random one becomes current. Backoff state is kept per address.
func (s *Set) Refresh(resolve Resolver) {
	var eps []Endpoint
	seen := map[string]bool{}
	add := func(e Endpoint) {
		if len(eps) < MaxHosts && !seen[e.Addr] {
			seen[e.Addr] = true
			eps = append(eps, e)
		}
	}
	for _, h := range s.opts.Hosts {
		host, port, _ := net.SplitHostPort(h)
		if resolve == nil || net.ParseIP(host) != nil {
			add(Endpoint{Host: h, Addr: h})
			continue
		}
		addrs, err := resolve(host)
		if err != nil || len(addrs) == 0 {
			add(Endpoint{Host: h, Addr: h})
			continue
		}
		for _, a := range addrs {
			if len(eps) >= MaxHosts {
				break
			}
			if ip := net.ParseIP(a); ip != nil {
				add(Endpoint{Host: h, Addr: net.JoinHostPort(ip.String(), port)})
			}
		}
	}
	if len(eps) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.eps[s.cur]
	s.eps = eps
	s.cur = -1
	for i, e := range eps {
		if e == cur {
			s.cur = i
		}
	}
	if s.cur < 0 {
		s.cur = s.rnd.IntN(len(eps))
	}
	live := map[string]bool{}
	for _, e := range eps {
		live[e.Addr] = true
	}
	for a := range s.health {
		if !live[a] {
			delete(s.health, a)
		}
	}
}
