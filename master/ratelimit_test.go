package master_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/retryinfo"
	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/ratelimit"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

var off = ratelimit.Rate{Off: true}

// testClock is the rate limits' clock in these tests.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// wantExhausted checks a rate-limit refusal: RESOURCE_EXHAUSTED with a
// RetryInfo delay and a message containing every want.
func wantExhausted(t *testing.T, what string, err error, want ...string) time.Duration {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("%s: %v, want RESOURCE_EXHAUSTED", what, err)
	}
	d, ok := retryinfo.Delay(err)
	if !ok || d <= 0 {
		t.Fatalf("%s: %v carries no RetryInfo delay (got %s, %v)", what, err, d, ok)
	}
	for _, w := range want {
		if !strings.Contains(status.Convert(err).Message(), w) {
			t.Errorf("%s: message %q lacks %q", what, status.Convert(err).Message(), w)
		}
	}
	return d
}

// Issue 12 rate limits, per identity, over real mutual TLS: an agent that
// calls in a burst beyond its identity's bucket is answered
// RESOURCE_EXHAUSTED with RetryInfo, while another agent and the operator
// are not affected; the bucket refills.
func TestRateLimitPerIdentity(t *testing.T) {
	clk := newTestClock()
	m := startMaster(t, func(o *master.Options) {
		o.RateLimits = ratelimit.Config{Identity: ratelimit.Rate{N: 1, Per: time.Minute, Burst: 8}, Address: off, Now: clk.Now}
	})
	a1, a2 := m.agent(t, "a1"), m.agent(t, "a2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := func(c gridv1.GridMasterClient, id string) error {
		_, err := c.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: id, Hostname: "host-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 1})
		return err
	}
	beat := func(c gridv1.GridMasterClient, id string) error {
		_, err := c.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: id})
		return err
	}
	if err := reg(a1, "a1"); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := beat(a1, "a1"); err != nil {
			t.Fatalf("heartbeat %d of a1 within its burst: %v", i+2, err)
		}
	}
	var d time.Duration
	for range 3 {
		d = wantExhausted(t, "a1's 9th call in a burst of 8", beat(a1, "a1"), "agent a1", "per identity", "retry in")
	}
	if d > time.Minute {
		t.Errorf("RetryInfo delay %s, want at most the 1-minute refill of one call", d)
	}
	// Other identities have their own buckets.
	if err := reg(a2, "a2"); err != nil {
		t.Fatalf("a2 while a1 is throttled: %v", err)
	}
	if err := beat(a2, "a2"); err != nil {
		t.Fatalf("a2 while a1 is throttled: %v", err)
	}
	if _, err := m.grid.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{}); err != nil {
		t.Fatalf("the operator while a1 is throttled: %v", err)
	}
	// After the announced delay a1 may call again.
	clk.Advance(d)
	if err := beat(a1, "a1"); err != nil {
		t.Fatalf("a1 after waiting the RetryInfo delay %s: %v", d, err)
	}
}

// Issue 12: the per-address limit covers both servers with one budget,
// before authentication (calls without credentials count too); HTTP
// answers 429 JSON with Retry-After.
func TestRateLimitPerAddress(t *testing.T) {
	clk := newTestClock()
	var httpAddr string
	m := startMaster(t, func(o *master.Options) {
		o.RateLimits = ratelimit.Config{Address: ratelimit.Rate{N: 1, Per: time.Minute, Burst: 6}, Identity: off, Now: clk.Now}
		ready := o.Ready
		o.Ready = func(a master.Addrs) { httpAddr = a.HTTP; ready(a) }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		if _, err := m.grid.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{}); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	for i := range 3 {
		if code := get(t, "http://"+httpAddr+"/api/binaries", ""); code != http.StatusOK {
			t.Fatalf("HTTP request %d (calls %d of 6): %d, want 200", i+1, i+4, code)
		}
	}
	_, err := m.grid.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
	wantExhausted(t, "7th call from 127.0.0.1", err, "127.0.0.1", "per address")
	resp, err := http.Get("http://" + httpAddr + "/api/binaries")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error string }
	if resp.StatusCode != http.StatusTooManyRequests || json.NewDecoder(resp.Body).Decode(&body) != nil || !strings.Contains(body.Error, "too many requests from 127.0.0.1") {
		t.Fatalf("HTTP over the limit: %d %+v, want 429 with a JSON error naming the address", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("429 Retry-After = %q, want whole seconds", ra)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("429 Content-Type %q, want JSON", ct)
	}
}

// Issue 12: enrollment is limited per address so that a join token cannot
// be brute-forced. Refused tokens count twice; once the address's bucket is
// empty every attempt is refused without looking at the token, even a
// correct one, and the error says so; after the window it works again.
// Successful enrollments do not count (a fleet behind one NAT enrolls).
func TestRateLimitEnrollmentBruteForce(t *testing.T) {
	clk := newTestClock()
	m := startMaster(t, func(o *master.Options) {
		o.RateLimits = ratelimit.Config{Enroll: ratelimit.Rate{N: 1, Per: time.Minute, Burst: 6}, Address: off, Identity: off, Now: clk.Now}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Five agents in a row from one address, more than the burst of failures.
	for i := range 5 {
		m.agent(t, fmt.Sprint("ok", i))
	}
	created, err := m.grid.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{Uses: 10})
	if err != nil {
		t.Fatal(err)
	}
	good, err := jointoken.Parse(created.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	try := func(tok jointoken.Token, id string) error {
		key, err := mtls.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		_, err = enroll.Enroll(ctx, enroll.Request{Addr: m.addr, Token: tok, AgentID: id, Hostname: "h-" + id, Key: key})
		return err
	}
	guesses := 0
	for ; guesses < 100; guesses++ {
		bad, err := jointoken.Generate(good.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		bad.ID = good.ID // the right token id, a guessed secret
		err = try(bad, "guess")
		if status.Code(err) == codes.ResourceExhausted {
			wantExhausted(t, "guess after the limit", err, "failed enrollment attempts from 127.0.0.1", "even a correct one")
			break
		}
		if !errors.Is(err, enroll.ErrRefused) {
			t.Fatalf("guess %d: %v, want refused", guesses+1, err)
		}
	}
	if guesses != 3 {
		t.Fatalf("cut off after %d wrong guesses, want 3 (burst 6, each failure costs %d)", guesses, ratelimit.FailureCost)
	}
	d := wantExhausted(t, "the correct token from the locked-out address", try(good, "late"), "even a correct one")
	clk.Advance(d)
	if err := try(good, "late"); err != nil {
		t.Fatalf("the correct token after waiting the RetryInfo delay %s: %v", d, err)
	}
}
