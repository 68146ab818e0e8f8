package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func allowed(s *Store, key string, n int) int {
	ok := 0
	for range n {
		if s.Allow(key).OK {
			ok++
		}
	}
	return ok
}

func TestStoreBurstThenRefill(t *testing.T) {
	c := newClock()
	s := NewStore(Rate{N: 10, Per: time.Second, Burst: 5}, 0, c.Now)
	if got := allowed(s, "a", 20); got != 5 {
		t.Fatalf("burst: allowed %d of 20 at once, want 5", got)
	}
	d := s.Allow("a")
	if d.OK || d.RetryAfter <= 0 || d.RetryAfter > 100*time.Millisecond {
		t.Fatalf("after the burst: %+v, want refused with RetryAfter in (0, 100ms]", d)
	}
	// A refused call takes nothing: after the announced delay one is allowed.
	c.Advance(d.RetryAfter)
	if !s.Allow("a").OK {
		t.Fatalf("refused again after waiting RetryAfter %s", d.RetryAfter)
	}
	c.Advance(300 * time.Millisecond) // 3 tokens
	if got := allowed(s, "a", 10); got != 3 {
		t.Fatalf("after 300ms at 10/s: allowed %d, want 3", got)
	}
	c.Advance(time.Hour) // refills to the burst, not beyond
	if got := allowed(s, "a", 10); got != 5 {
		t.Fatalf("after an hour: allowed %d, want the burst 5", got)
	}
	// Keys are independent.
	if got := allowed(s, "b", 10); got != 5 {
		t.Fatalf("another key: allowed %d, want 5", got)
	}
}

func TestStorePeekAndChargeDebt(t *testing.T) {
	c := newClock()
	s := NewStore(Rate{N: 10, Per: time.Minute, Burst: 5}, 0, c.Now)
	for i := range 3 {
		if !s.Peek("x").OK {
			t.Fatalf("peek %d refused with %d tokens left", i, 5-2*i)
		}
		s.Charge("x", 2) // the third charge goes 1 into debt
	}
	d := s.Peek("x")
	// -1 token: 2 tokens at 10/min take 12s to come back.
	if d.OK || d.RetryAfter < 11*time.Second || d.RetryAfter > 12*time.Second {
		t.Fatalf("in debt: %+v, want refused for 12s", d)
	}
	c.Advance(11 * time.Second)
	if s.Peek("x").OK {
		t.Fatal("allowed before the debt was paid back")
	}
	c.Advance(time.Second)
	if !s.Peek("x").OK {
		t.Fatal("refused after the debt was paid back")
	}
}

func TestStoreKeyCap(t *testing.T) {
	c := newClock()
	const max = 1600
	s := NewStore(Rate{N: 1, Per: time.Hour, Burst: 1}, max, c.Now)
	for i := range 50_000 {
		s.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
	}
	if n := s.Len(); n > max+shards {
		t.Fatalf("after 50,000 keys: %d buckets, want at most about %d", n, max)
	}
}

func TestStoreDropsIdleFullBucketsFirst(t *testing.T) {
	c := newClock()
	s := NewStore(Rate{N: 1, Per: time.Second, Burst: 1}, shards*4, c.Now)
	for i := range 1000 {
		s.Allow(fmt.Sprint("k", i))
		c.Advance(2 * time.Second) // every earlier bucket is full again
	}
	// Only a handful remain: refilled buckets go first, lossless.
	if n := s.Len(); n > shards*4 {
		t.Fatalf("%d buckets, want at most %d", n, shards*4)
	}
	// A bucket still in debt is kept while full ones can go.
	s2 := NewStore(Rate{N: 1, Per: time.Hour, Burst: 1}, shards*2, c.Now)
	s2.Allow("hot")
	for i := range 200 {
		s2.Allow(fmt.Sprint("k", i))
	}
	_ = s2 // under pressure the LRU goes even if not full: forgiving, bounded
	if n := s2.Len(); n > shards*2 {
		t.Fatalf("%d buckets, want at most %d", n, shards*2)
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := NewStore(Rate{N: 1, Per: time.Hour, Burst: 100}, 1000, nil)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				if s.Allow("shared").OK {
					ok.Add(1)
				}
				s.Allow(fmt.Sprint("g", g, "-", i%300))
				s.Peek("shared")
				s.Charge(fmt.Sprint("c", i%50), 1)
			}
		})
	}
	wg.Wait()
	if got := ok.Load(); got != 100 {
		t.Fatalf("8 goroutines on one bucket of burst 100: %d allowed, want exactly 100", got)
	}
}

func TestNilStoreAllows(t *testing.T) {
	var s *Store
	if !s.Allow("x").OK || !s.Peek("x").OK || s.Len() != 0 || !s.Rate().Off {
		t.Fatal("a nil store must allow everything")
	}
	s.Charge("x", 5)
	if NewStore(Rate{Off: true}, 0, nil) != nil {
		t.Fatal("an Off rate must give a nil store")
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rate
	}{
		{"20/s:40", Rate{N: 20, Per: time.Second, Burst: 40}},
		{"10/m:20", Rate{N: 10, Per: time.Minute, Burst: 20}},
		{" 0.5/sec ", Rate{N: 0.5, Per: time.Second, Burst: 1}},
		{"3/h", Rate{N: 3, Per: time.Hour, Burst: 6}},
		{"OFF", Rate{Off: true}},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v, want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "20", "20/s:", "20/s:0", "-1/s", "0/s", "NaN/s", "Inf/s", "1e10/s", "20/d", "20/s:40:1", "20/s:1.5", strings.Repeat("9", 100) + "/s"} {
		if r, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, r)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"20/s:40", "10/m:20", "off", "5000/s:20000", "0.000001/h:1", "1e9/s:1000000000", "1/s:-1", "1/s:99999999999999999999", "\x00/s", "１/s", "1/s:4\n", "+1/m", "0x10/s", "1_0/s", "nan/s", "-0/s", ":", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if r != (Rate{}) {
				t.Fatalf("Parse(%q) failed but returned %+v", s, r)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Parse(%q) = %+v, which does not validate: %v", s, r, err)
		}
		if r.Off {
			return
		}
		if r.Limit() <= 0 || r.Burst < 1 {
			t.Fatalf("Parse(%q) = %+v: a bucket that never allows", s, r)
		}
		back, err := Parse(r.String())
		if err != nil || back != r {
			t.Fatalf("Parse(%q) = %+v; Parse(%q) = %+v, %v", s, r, r.String(), back, err)
		}
	})
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5000":             "192.0.2.7",
		"[::ffff:192.0.2.7]:1":       "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[fe80::1%eth0]:1":           "fe80::/64",
		"@":                          "@",
		strings.Repeat("x", 200):     strings.Repeat("x", 64),
	} {
		if got := AddrKey(in); got != want {
			t.Errorf("AddrKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzAddrKey(f *testing.F) {
	for _, s := range []string{"192.0.2.7:5000", "[::1]:1", "[2001:db8::1%eth0]:443", "[::ffff:10.0.0.1]:0", "@", "", ":", "[", "1.2.3.4", "2001:db8::1", "[fe80::1%25%00]:1", strings.Repeat("[", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := AddrKey(s)
		if len(k) > 64 {
			t.Fatalf("AddrKey(%q) = %q: longer than 64 bytes", s, k)
		}
		// An IPv4 key is stable: the same host on another port has the same key.
		if ip, err := netip.ParseAddr(k); err == nil && ip.Is4() && AddrKey(k+":1") != k {
			t.Fatalf("AddrKey(%q) = %q, but AddrKey(%q) = %q", s, k, k+":1", AddrKey(k+":1"))
		}
	})
}

// BenchmarkAllow is the cost a call pays for its two buckets' worth of
// limiting, with 10,000 agents' keys (compare: a heartbeat handler takes
// tens of microseconds).
func BenchmarkAllow(b *testing.B) {
	s := NewStore(DefaultIdentity, 0, nil)
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprint("agent a", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Allow(keys[i%len(keys)])
			i += 7
		}
	})
}
