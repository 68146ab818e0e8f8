// Command egress benchmarks the binary server's bandwidth budget
// (--max-egress, master/binapi): N concurrent downloads of one binary
// under a global budget, against the unlimited baseline, in one run.
//
// It serves a real catalog directory through the real binary API and
// handler chain on a loopback port and reports, for each run, the
// aggregate rate beside the budget, every download's rate beside its fair
// share (budget / N), and the latency of GET /api/binaries (the metadata
// API, polled meanwhile), whose p99 must stay low while downloads
// saturate the budget.
//
//	go run ./bench/egress                       # 100 downloads, 100MB/s
//	go run ./bench/egress -n 50 -budget 200MB/s -size 8MB
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/internal/ratespec"
	"github.com/sutragrid/sutra/master/binapi"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/httpserver"
)

// Config is one benchmark.
type Config struct {
	N        int           // concurrent downloads
	Budget   int64         // bytes per second (the limited run)
	Size     int64         // bytes per download
	Poll     time.Duration // metadata poll interval
	Baseline bool          // also run unlimited
}

// Result is one run.
type Result struct {
	Name      string
	Budget    int64
	Elapsed   time.Duration
	Aggregate float64   // bytes per second
	Rates     []float64 // per download, sorted
	MetaP50   time.Duration
	MetaP99   time.Duration
	MetaN     int
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "egress:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("egress", flag.ContinueOnError)
	n := fs.Int("n", 100, "concurrent downloads")
	budget := fs.String("budget", "100MB/s", "global egress budget (--max-egress)")
	size := fs.String("size", "4MB", "size of the binary each download fetches")
	poll := fs.Duration("poll", 20*time.Millisecond, "interval of GET /api/binaries during the downloads")
	noBase := fs.Bool("no-baseline", false, "skip the unlimited baseline run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := ratespec.Parse(*budget)
	if err != nil || b == 0 {
		return fmt.Errorf("-budget %q: want a rate like 100MB/s (%v)", *budget, err)
	}
	sz, err := ratespec.Parse(*size)
	if err != nil || sz == 0 || sz > 1<<30 {
		return fmt.Errorf("-size %q: want a size like 4MB, at most 1GiB", *size)
	}
	if *n < 1 || *n > 10_000 {
		return fmt.Errorf("-n %d: want 1 to 10000", *n)
	}
	res, err := Run(ctx, Config{N: *n, Budget: b, Size: sz, Poll: *poll, Baseline: !*noBase})
	if err != nil {
		return err
	}
	Print(out, Config{N: *n, Budget: b, Size: sz}, res)
	return nil
}

// Run runs the limited benchmark and, with cfg.Baseline, the unlimited one first.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	dir, err := os.MkdirTemp("", "egress-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	const name = "storage-server-1.0.0-linux-x86_64"
	if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte("sutra-grid "), int(cfg.Size/10)+1)[:cfg.Size], 0o755); err != nil {
		return nil, err
	}
	old := time.Now().Add(-time.Hour)
	_ = os.Chtimes(filepath.Join(dir, name), old, old)
	cat, err := catalog.Open(ctx, catalog.Options{Dir: dir, NoWatch: true, Rescan: -1})
	if err != nil {
		return nil, err
	}
	defer cat.Close()
	var out []Result
	if cfg.Baseline {
		r, err := once(ctx, cat, name, cfg, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	r, err := once(ctx, cat, name, cfg, cfg.Budget)
	if err != nil {
		return nil, err
	}
	return append(out, r), nil
}

func once(ctx context.Context, cat *catalog.Catalog, name string, cfg Config, budget int64) (Result, error) {
	api, err := binapi.New(binapi.Options{Catalog: cat, MaxEgress: budget, MaxConcurrentDownloads: max(256, cfg.N)})
	if err != nil {
		return Result{}, err
	}
	mux := http.NewServeMux()
	api.Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Result{}, err
	}
	srv := &http.Server{Handler: httpserver.Handler(mux, nil), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.N + 4, DisableCompression: true}}

	// Metadata poller: its own connection, like an operator's CLI.
	metaClient := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}
	var lat []time.Duration
	stop := make(chan struct{})
	var pollWG sync.WaitGroup
	pollWG.Go(func() {
		tk := time.NewTicker(cfg.Poll)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			t0 := time.Now()
			resp, err := metaClient.Get(base + "/api/binaries")
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(t0))
		}
	})

	// Fairness is measured over the window in which every download is
	// running (from the last first byte to the first finish): before it
	// and after it the downloads still running rightly share more.
	got := make([]atomic.Int64, cfg.N)
	errs := make([]error, cfg.N)
	var started sync.WaitGroup
	started.Add(cfg.N)
	firstDone := make(chan struct{})
	var doneOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.N {
		wg.Go(func() {
			first := sync.OnceFunc(started.Done)
			defer first()
			defer doneOnce.Do(func() { close(firstDone) })
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/binaries/"+name, nil)
			resp, err := client.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := resp.Body.Read(buf)
				if n > 0 {
					got[i].Add(int64(n))
					first()
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					errs[i] = err
					return
				}
			}
			if resp.StatusCode != http.StatusOK || got[i].Load() != cfg.Size {
				errs[i] = fmt.Errorf("download %d: status %d, %d bytes of %d", i, resp.StatusCode, got[i].Load(), cfg.Size)
			}
		})
	}
	started.Wait()
	w0, s0 := time.Now(), snapshot(got)
	var overlapped bool
	select {
	case <-firstDone: // one finished before the last started: no common window
	default:
		overlapped = true
	}
	<-firstDone
	w1, s1 := time.Now(), snapshot(got)
	var rates []float64
	for i := range cfg.N {
		if overlapped {
			rates = append(rates, float64(s1[i]-s0[i])/w1.Sub(w0).Seconds())
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	pollWG.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	slices.Sort(rates)
	slices.Sort(lat)
	r := Result{Name: "unlimited (baseline)", Budget: budget, Elapsed: elapsed,
		Aggregate: float64(int64(cfg.N)*cfg.Size) / elapsed.Seconds(), Rates: rates, MetaN: len(lat)}
	if budget > 0 {
		r.Name = "--max-egress " + ratespec.Format(budget)
	}
	if len(lat) > 0 {
		r.MetaP50 = lat[len(lat)/2]
		r.MetaP99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return r, nil
}

// Print writes the runs side by side with the goals of issue 14.
func Print(w io.Writer, cfg Config, res []Result) {
	fmt.Fprintf(w, "%d concurrent downloads of %s each\n\n", cfg.N, ratespec.Format(cfg.Size)[:len(ratespec.Format(cfg.Size))-2])
	fmt.Fprintf(w, "%-24s %9s %14s %14s %14s %12s %12s\n", "run", "elapsed", "aggregate", "slowest dl*", "fastest dl*", "meta p50", "meta p99")
	for _, r := range res {
		fmt.Fprintf(w, "%-24s %9s %14s %14s %14s %12s %12s\n", r.Name, r.Elapsed.Round(time.Millisecond),
			mbps(r.Aggregate), rateAt(r.Rates, 0), rateAt(r.Rates, len(r.Rates)-1),
			r.MetaP50.Round(10*time.Microsecond), r.MetaP99.Round(10*time.Microsecond))
	}
	fmt.Fprintf(w, "* rate of each download while all %d run (from the last first byte to the first finish)\n", cfg.N)
	for _, r := range res {
		if r.Budget == 0 {
			continue
		}
		if len(r.Rates) == 0 {
			fmt.Fprintf(w, "\nbudget %s: no window in which every download ran MISSED\n", ratespec.Format(r.Budget))
			continue
		}
		fair := float64(r.Budget) / float64(cfg.N)
		off := (r.Aggregate - float64(r.Budget)) / float64(r.Budget) * 100
		lo, hi := (r.Rates[0]-fair)/fair*100, (r.Rates[len(r.Rates)-1]-fair)/fair*100
		fmt.Fprintf(w, "\nbudget %s: aggregate %+.1f%% of it (goal within 5%%) %s\n", ratespec.Format(r.Budget), off, verdict(abs(off) <= 5))
		fmt.Fprintf(w, "fair share %s: downloads from %+.1f%% to %+.1f%% of it (goal within 20%%) %s\n", mbps(fair), lo, hi, verdict(abs(lo) <= 20 && abs(hi) <= 20))
		fmt.Fprintf(w, "GET /api/binaries meanwhile: p99 %s over %d requests (goal < 20ms) %s\n", r.MetaP99.Round(10*time.Microsecond), r.MetaN, verdict(r.MetaP99 < 20*time.Millisecond))
	}
}

func mbps(b float64) string { return fmt.Sprintf("%.2f MB/s", b/1e6) }

func abs(x float64) float64 { return max(x, -x) }

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func snapshot(got []atomic.Int64) []int64 {
	out := make([]int64, len(got))
	for i := range got {
		out[i] = got[i].Load()
	}
	return out
}

func rateAt(rates []float64, i int) string {
	if len(rates) == 0 {
		return "- (no overlap)"
	}
	return mbps(rates[i])
}
