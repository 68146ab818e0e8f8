package supervisor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// startingProbeInterval is how often a starting node is probed until its
// first healthy answer (at most HealthOptions.Interval), so a node counts
// as running within a fraction of a second of being able to serve.
const startingProbeInterval = 100 * time.Millisecond

// HealthOptions configure the HTTP health probe of nodes with a HealthURL.
type HealthOptions struct {
	// Interval between two probes of a running node (default 5 s).
	Interval time.Duration
	// Timeout bounds one probe (default 2 s).
	Timeout time.Duration
	// Threshold: a running node without a healthy probe for this long is
	// killed and restarted like a crash (default 30 s). Must exceed Interval.
	Threshold time.Duration
	// StartTimeout: a starting node that is not healthy this long after it
	// started is killed and restarted like a crash (default 60 s).
	StartTimeout time.Duration
	// Observe, when set, sees every probe's latency and result (nil:
	// healthy), for metrics. It must not block.
	Observe func(d time.Duration, err error)
}

// newProbeClient returns the HTTP client of every probe: no proxy (probes
// go to the node itself), one idle connection per node, timeout bounded.
func newProbeClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.MaxIdleConnsPerHost = 1
	return &http.Client{Transport: tr, Timeout: timeout}
}

// prober probes one node's health URL; a node's watch runs its loop.
type prober struct {
	client *http.Client
	url    string
	opts   HealthOptions
}

// loop probes until quit and sends each result: every 10 ms, doubling up to
// startingProbeInterval, until the first healthy answer, then every
// opts.Interval.
func (p prober) loop(results chan<- error, quit <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-quit
		cancel()
	}()
	// While starting: 10 ms, 20 ms, 40 ms … up to startingProbeInterval,
	// so a fast node counts as running within milliseconds of serving.
	interval := min(10*time.Millisecond, p.opts.Interval)
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		start := time.Now()
		err := p.probe(ctx)
		if p.opts.Observe != nil && ctx.Err() == nil {
			p.opts.Observe(time.Since(start), err)
		}
		select {
		case results <- err:
		case <-quit:
			return
		}
		if err == nil {
			interval = p.opts.Interval
		} else if interval < startingProbeInterval {
			interval = min(2*interval, startingProbeInterval, p.opts.Interval)
		}
		t.Reset(interval)
	}
}

// probe is one GET of the health URL: nil on 200, the reason otherwise.
func (p prober) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", p.url, resp.Status)
	}
	return nil
}
