package supervisor

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// HealthOptions.Observe sees every probe with its latency and result.
func TestHealthProbeObserved(t *testing.T) {
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	type obs struct {
		d   time.Duration
		err error
	}
	seen := make(chan obs, 100)
	p := prober{client: newProbeClient(time.Second), url: srv.URL, opts: HealthOptions{Interval: 10 * time.Millisecond, Timeout: time.Second,
		Observe: func(d time.Duration, err error) { seen <- obs{d, err} }}}
	results := make(chan error, 100)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() { p.loop(results, quit); close(done) }()
	defer func() { close(quit); <-done }()
	o := <-seen
	if o.err != nil || o.d <= 0 {
		t.Fatalf("healthy probe observed as %v after %v", o.err, o.d)
	}
	fail.Store(true)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case o := <-seen:
			if o.err != nil {
				return
			}
		case <-results:
		case <-deadline:
			t.Fatal("failing probe never observed")
		}
	}
}
