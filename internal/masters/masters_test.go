package masters

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseHosts(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "localhost:7000", want: []string{"localhost:7000"}},
		{in: " a:7000 , b:7000,c:7000 ", want: []string{"a:7000", "b:7000", "c:7000"}},
		{in: "a:7000,A:7000,b:7000,a:7000", want: []string{"a:7000", "b:7000"}},
		{in: "[::1]:7000,127.0.0.1:7000", want: []string{"[::1]:7000", "127.0.0.1:7000"}},
		{in: "", wantErr: "is empty"},
		{in: "a:7000,,b:7000", wantErr: "entry 2 is empty"},
		{in: "a:7000,b", wantErr: `entry 2 "b" is not host:port`},
		{in: "a:7000,http://b:7000", wantErr: "entry 2 \"http://b:7000\" is a URL"},
		{in: "a:0", wantErr: "invalid port"},
		{in: "a:+70", wantErr: "invalid port"},
		{in: ":7000", wantErr: "has no host"},
		{in: "a b:7000", wantErr: "invalid host"},
		{in: strings.Repeat("a:1,", 16) + "b:1", want: []string{"a:1", "b:1"}},
		{in: func() string {
			var e []string
			for i := range 17 {
				e = append(e, "h"+strings.Repeat("x", i)+":7000")
			}
			return strings.Join(e, ",")
		}(), wantErr: "17 entries"},
		{in: strings.Repeat("a:1,", 100), wantErr: "entries"},
	} {
		got, err := ParseHosts(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseHosts(%.40q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseHosts(%.40q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseMasterHosts(f *testing.F) {
	for _, s := range []string{"a:7000", "a:7000,b:7000,c:7000", " , ", "[::1]:1,[::1]:1", "\x00:1", "a:99999",
		strings.Repeat("a:1,", 20), "http://x:1", "[fe80::1%eth0]:7000", "ä:7000,\u202e:7000", "a:-1", ":", "a:1,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hosts, err := ParseHosts(s)
		if err != nil {
			if hosts != nil {
				t.Fatalf("ParseHosts(%q) returned hosts with an error", s)
			}
			return
		}
		if len(hosts) < 1 || len(hosts) > MaxHosts {
			t.Fatalf("ParseHosts(%q) = %d hosts", s, len(hosts))
		}
		seen := map[string]bool{}
		for _, h := range hosts {
			if CheckHostPort(h) != "" || strings.TrimSpace(h) != h || strings.Contains(h, ",") {
				t.Fatalf("ParseHosts(%q) kept invalid entry %q", s, h)
			}
			if seen[strings.ToLower(h)] {
				t.Fatalf("ParseHosts(%q) kept duplicate %q", s, h)
			}
			seen[strings.ToLower(h)] = true
		}
		// Parsing the joined result gives it back.
		again, err := ParseHosts(strings.Join(hosts, ","))
		if err != nil || !slices.Equal(again, hosts) {
			t.Fatalf("ParseHosts(join(%q)) = %q, %v", hosts, again, err)
		}
		set, err := New(Options{Hosts: hosts, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		cur := set.Current()
		next, _ := set.Failed(cur)
		if !slices.Contains(set.Endpoints(), next) || (len(hosts) > 1 && next == cur) {
			t.Fatalf("Failed(%s) = %s over %q", cur, next, hosts)
		}
	})
}

// Issue 16: agents spread over the masters from the start (±10 %), and the
// agents of a dead master spread evenly over the survivors (each 40-60 %).
func TestSpreadOnFailover(t *testing.T) {
	hosts := []string{"a:7000", "b:7000", "c:7000"}
	const agents = 3000
	initial := map[string]int{}
	moved := map[string]map[string]int{} // dead -> survivor -> agents
	for i := range agents {
		s, err := New(Options{Hosts: hosts, Seed: uint64(i) + 1})
		if err != nil {
			t.Fatal(err)
		}
		dead := s.Current()
		initial[dead.Host]++
		next, wait := s.Failed(dead)
		if next == dead || wait != 0 {
			t.Fatalf("agent %d: Failed(%s) = %s after %v, want another master at once", i, dead, next, wait)
		}
		if moved[dead.Host] == nil {
			moved[dead.Host] = map[string]int{}
		}
		moved[dead.Host][next.Host]++
	}
	for _, h := range hosts {
		if n := initial[h]; n < agents/3*9/10 || n > agents/3*11/10 {
			t.Errorf("initial choice: %d of %d agents on %s, want %d ±10%%", n, agents, h, agents/3)
		}
		total := 0
		for _, n := range moved[h] {
			total += n
		}
		for to, n := range moved[h] {
			if n*100 < total*40 || n*100 > total*60 {
				t.Errorf("%s died: %d of its %d agents moved to %s, want 40-60%%", h, n, total, to)
			}
		}
		if len(moved[h]) != 2 {
			t.Errorf("%s died: its agents moved to %v, want both survivors", h, moved[h])
		}
	}
}

// A master that works stays current; a failed one backs off exponentially
// with full jitter (capped), so it is not hammered when all are down.
func TestStickyAndBackoff(t *testing.T) {
	now := time.Unix(1000, 0)
	s, err := New(Options{Hosts: []string{"a:1", "b:1"}, Seed: 7, BackoffMin: time.Second, BackoffMax: 8 * time.Second,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	first := s.Current()
	for range 100 {
		s.Succeeded(first)
		if s.Current() != first {
			t.Fatal("the current master changed while it works")
		}
	}
	// Both down: the waits grow and stay under the cap.
	var maxWait time.Duration
	cur := first
	for i := range 40 {
		next, wait := s.Failed(cur)
		if next == cur {
			t.Fatalf("step %d: stayed on %s with another master listed", i, cur)
		}
		if wait > 8*time.Second {
			t.Fatalf("step %d: wait %v above the cap", i, wait)
		}
		maxWait = max(maxWait, wait)
		now = now.Add(wait)
		cur = next
	}
	if maxWait < 2*time.Second {
		t.Errorf("longest wait %v: the backoff does not grow", maxWait)
	}
	if w := s.Wait(cur); w != 0 {
		t.Errorf("Wait(current) = %v right after its backoff, want 0", w)
	}
	if next, _ := s.Failed(cur); s.Wait(cur) == 0 && s.Wait(next) == 0 {
		t.Error("Wait: no endpoint backing off after both failed")
	}
	// A late failure report of a non-current master does not move.
	other := s.Endpoints()[0]
	if other == s.Current() {
		other = s.Endpoints()[1]
	}
	before := s.Current()
	if got, _ := s.Failed(other); got != before {
		t.Errorf("Failed(non-current) moved from %s to %s", before, got)
	}
	// One master: it stays, with its backoff.
	one, _ := New(Options{Hosts: []string{"only:1"}, Seed: 3, Now: func() time.Time { return now }})
	if next, _ := one.Failed(one.Current()); next.Host != "only:1" {
		t.Errorf("single master: Failed moved to %s", next)
	}
}

func TestRefreshExpandsNames(t *testing.T) {
	s, _ := New(Options{Hosts: []string{"grid.test:7000", "10.0.0.9:7000", "gone.test:7000"}, Seed: 5})
	calls := 0
	s.Refresh(func(host string) ([]string, error) {
		calls++
		switch host {
		case "grid.test":
			return []string{"127.0.0.1", "127.0.0.2", "not-an-ip", "127.0.0.1"}, nil
		}
		return nil, errors.New("no such host")
	})
	got := s.Endpoints()
	want := []Endpoint{
		{Host: "grid.test:7000", Addr: "127.0.0.1:7000"}, {Host: "grid.test:7000", Addr: "127.0.0.2:7000"},
		{Host: "10.0.0.9:7000", Addr: "10.0.0.9:7000"}, {Host: "gone.test:7000", Addr: "gone.test:7000"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Refresh: endpoints %v, want %v", got, want)
	}
	if calls != 2 {
		t.Errorf("resolver called %d times, want 2 (IP literals are not resolved)", calls)
	}
	// Bounded to MaxHosts.
	s.Refresh(func(string) ([]string, error) {
		var many []string
		for i := range 40 {
			many = append(many, "10.1.0."+string(rune('0'+i%10))+string(rune('0'+i/10)))
		}
		return many, nil
	})
	if n := s.Len(); n > MaxHosts {
		t.Errorf("Refresh kept %d endpoints, want at most %d", n, MaxHosts)
	}
}
