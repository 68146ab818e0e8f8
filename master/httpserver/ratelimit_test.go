package httpserver

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/ratelimit"
)

// serveLimited runs New with limits on a real loopback listener.
func serveLimited(t *testing.T, lim *ratelimit.Limits) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Routes: routes(), ReadHeaderTimeout: 5 * time.Second, Limits: lim})
	go func() { _ = srv.Serve(httpjson.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func status(t *testing.T, url, token string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, resp.Header, body.Error
}

// Issue 12: over the per-address limit every route answers 429 with a JSON
// error and Retry-After in whole seconds, rounded up.
func TestRateLimitAddress429(t *testing.T) {
	lim := &ratelimit.Limits{Address: ratelimit.NewStore(ratelimit.Rate{N: 1, Per: 90 * time.Second, Burst: 3}, 0, nil)}
	base := serveLimited(t, lim)
	for i := range 3 {
		if code, _, _ := status(t, base+"/api/things", ""); code != http.StatusTeapot {
			t.Fatalf("request %d within the burst: %d, want the route's 418", i+1, code)
		}
	}
	for _, p := range []string{"/api/things", "/nowhere", "/a/../b"} {
		code, h, msg := status(t, base+p, "")
		if code != http.StatusTooManyRequests {
			t.Fatalf("GET %s over the limit: %d, want 429", p, code)
		}
		ra, err := strconv.Atoi(h.Get("Retry-After"))
		if err != nil || ra < 89 || ra > 90 {
			t.Errorf("GET %s: Retry-After %q, want about 90 (seconds, rounded up)", p, h.Get("Retry-After"))
		}
		if !strings.HasPrefix(h.Get("Content-Type"), "application/json") || !strings.Contains(msg, "too many requests from 127.0.0.1") {
			t.Errorf("GET %s: %q %q, want a JSON error naming the address", p, h.Get("Content-Type"), msg)
		}
	}
}

// Issue 12: requests with a credential also spend that credential's bucket;
// a wrong token spends only its own, never the operator's.
func TestRateLimitCredential(t *testing.T) {
	lim := &ratelimit.Limits{Identity: ratelimit.NewStore(ratelimit.Rate{N: 1, Per: time.Hour, Burst: 2}, 0, nil)}
	base := serveLimited(t, lim)
	for range 2 {
		if code, _, _ := status(t, base+"/api/things", "guessed-token"); code != http.StatusTeapot {
			t.Fatalf("within the burst: %d", code)
		}
	}
	code, h, msg := status(t, base+"/api/things", "guessed-token")
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(msg, "with this token") {
		t.Fatalf("3rd request with one token: %d %q %q, want 429 with Retry-After", code, h.Get("Retry-After"), msg)
	}
	if strings.Contains(msg, "guessed-token") {
		t.Fatalf("the 429 message quotes the token: %q", msg)
	}
	if code, _, _ := status(t, base+"/api/things", "the-operator-token"); code != http.StatusTeapot {
		t.Fatalf("another token while the first is throttled: %d, want 418", code)
	}
	if code, _, _ := status(t, base+"/api/things", ""); code != http.StatusTeapot {
		t.Fatalf("no token (address limit off): %d, want 418", code)
	}
}

func FuzzCredential(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x ", "Bearer", "Basic Zm9v", "", "BEARER \x00", "Bearer " + strings.Repeat("t", 5000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r, _ := http.NewRequest("GET", "http://m/x", nil)
		r.Header.Set("Authorization", h)
		key, what := credential(r)
		if key == "" {
			return
		}
		if len(key) > 40 || what == "" {
			t.Fatalf("credential(%q) = %q, %q", h, key, what)
		}
		if tok := strings.TrimSpace(h[min(7, len(h)):]); len(tok) >= 4 && strings.Contains(key, tok) {
			t.Fatalf("credential(%q) = %q contains the token", h, key)
		}
	})
}
