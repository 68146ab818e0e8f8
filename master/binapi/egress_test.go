package binapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/httpserver"
)

func newLimitedServer(t *testing.T, files map[string][]byte, opts Options) *httptest.Server {
	t.Helper()
	opts.Catalog = newCatalog(t, files)
	api, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(httpserver.Handler(mux, nil))
	t.Cleanup(srv.Close)
	return srv
}

// TestEgressBudgetFair: 4 concurrent downloads of 2 MB under a 4 MB/s
// budget take about 2 s together (aggregate within 10 % of the budget),
// finish within 20 % of each other (fair shares), and the metadata API
// answers fast meanwhile. Before the budget they took milliseconds.
func TestEgressBudgetFair(t *testing.T) {
	const (
		budget = 4_000_000
		size   = 2_000_000
		n      = 4
	)
	name := "storage-server-1.0.0-linux-x86_64"
	srv := newLimitedServer(t, map[string][]byte{name: bytes.Repeat([]byte("x"), size)}, Options{MaxEgress: budget})

	start := time.Now()
	var wg sync.WaitGroup
	done := make([]time.Duration, n)
	for i := range n {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/binaries/" + name)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			got, err := io.Copy(io.Discard, resp.Body)
			if err != nil || got != size {
				t.Errorf("download %d: %d bytes, %v; want %d", i, got, err, size)
			}
			done[i] = time.Since(start)
		})
	}
	// The metadata API is not behind the budget.
	time.Sleep(200 * time.Millisecond)
	var worst time.Duration
	for range 20 {
		t0 := time.Now()
		resp, err := http.Get(srv.URL + "/api/binaries")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		worst = max(worst, time.Since(t0))
	}
	wg.Wait()
	elapsed := time.Since(start)
	agg := float64(n*size) / elapsed.Seconds()
	if agg > budget*1.10 || agg < budget*0.85 {
		t.Errorf("aggregate %.0f B/s over %s, want within 10%% of %d", agg, elapsed, budget)
	}
	slices.Sort(done)
	if done[0] < time.Duration(float64(done[n-1])*0.8) {
		t.Errorf("finish times %v: the first finished more than 20%% before the last (unfair shares)", done)
	}
	if worst > 500*time.Millisecond {
		t.Errorf("GET /api/binaries took %s during saturated downloads", worst)
	}
	t.Logf("aggregate %.2f MB/s (budget %.2f), finish times %v, metadata worst %s", agg/1e6, budget/1e6, done, worst)
}

// TestMaxDownloadRate: one download of 1.5 MB under a 1.5 MB/s per-download
// cap takes about a second.
func TestMaxDownloadRate(t *testing.T) {
	const size = 1_500_000
	name := "storage-server-1.0.0-linux-x86_64"
	srv := newLimitedServer(t, map[string][]byte{name: bytes.Repeat([]byte("x"), size)}, Options{MaxDownloadRate: size})
	start := time.Now()
	resp, err := http.Get(srv.URL + "/binaries/" + name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || got != size {
		t.Fatalf("download: %d bytes, %v", got, err)
	}
	if el := time.Since(start); el < 850*time.Millisecond || el > 1500*time.Millisecond {
		t.Errorf("download of %d bytes under a %d B/s cap took %s, want about 1s", size, size, el)
	}
}

func TestEgressOptionsValidated(t *testing.T) {
	if _, err := New(Options{Catalog: newCatalog(t, nil), MaxEgress: -1}); err == nil {
		t.Error("New accepted MaxEgress -1")
	}
}
