package fetch

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpjson"
)

// Issue 12: the agent honours the master's 429 + Retry-After, in the
// transport's retries and between whole attempts: with a 10 ms backoff it
// still waits the 2 s the master asked for before each next request.
func TestRateLimited429HonoursRetryAfter(t *testing.T) {
	m := newTestMaster(t)
	m.publish("1.0.0", payload(1000, 1))
	var mu sync.Mutex
	var at []time.Time
	m.onMeta = func(w http.ResponseWriter, r *http.Request, n int) bool {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		if n <= 2 {
			w.Header().Set("Retry-After", "2")
			httpjson.WriteError(w, http.StatusTooManyRequests, "rate limited: too many requests from 127.0.0.1; retry in 2 s")
			return true
		}
		return false
	}
	// One transport retry per request, so that the second 429 ends the
	// first attempt and Ensure's own backoff decides the third request.
	f := m.fetcher(t, t.TempDir(), func(o *Options) {
		o.Retries, o.Attempts = 1, 3
		o.BackoffMin, o.BackoffMax = 10*time.Millisecond, 10*time.Second
	})
	if _, err := f.Ensure(context.Background(), "1.0.0"); err != nil {
		t.Fatalf("Ensure after two 429s: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 3 {
		t.Fatalf("%d metadata requests, want 3 (two 429s, then success)", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 2*time.Second {
			t.Errorf("request %d came %s after a 429 with Retry-After: 2, want at least 2s", i+1, gap.Round(time.Millisecond))
		}
	}
}

func TestAttemptDelayRetryAfter(t *testing.T) {
	m := newTestMaster(t)
	f := m.fetcher(t, t.TempDir(), func(o *Options) { o.BackoffMin, o.BackoffMax = time.Millisecond, time.Minute })
	resp := &http.Response{StatusCode: http.StatusTooManyRequests, Status: "429 Too Many Requests", Header: http.Header{"Retry-After": {"30"}}, Body: http.NoBody}
	err := statusError("GET", "http://m/x", resp)
	if d := f.attemptDelay(0, err); d != 30*time.Second {
		t.Errorf("attemptDelay after 429 Retry-After 30 = %s, want 30s", d)
	}
	resp.Header.Set("Retry-After", "86400")
	if d := f.attemptDelay(0, statusError("GET", "http://m/x", resp)); d != time.Minute {
		t.Errorf("attemptDelay after Retry-After a day = %s, want the 1m cap", d)
	}
	resp.StatusCode, resp.Status = http.StatusBadRequest, "400 Bad Request"
	if d := f.attemptDelay(0, statusError("GET", "http://m/x", resp)); d > time.Millisecond {
		t.Errorf("attemptDelay after a 400 = %s, want the plain backoff", d)
	}
}
