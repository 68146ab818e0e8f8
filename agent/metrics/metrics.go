// Package metrics is the agent's Prometheus endpoint (the optional
// [agent] metrics_addr, 127.0.0.1:7002 in the packaged config): its own
// non-global registry, read at scrape time from the agent's state (nodes,
// self-update, binary cache, certificate), and the compact summary the
// agent sends in its heartbeats so that the master can sum the fleet
// without scraping every machine.
package metrics

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Node is one node as the agent sees it.
type Node struct {
	// State is the supervisor's state (running, backoff, failed, ...).
	State string
	// Restarts since the node was adopted or started by this agent.
	Restarts int
}

// Snapshot is the agent's state read at scrape time.
type Snapshot struct {
	Nodes []Node
	// UpgradePhase is the self-update phase, "" when none.
	UpgradePhase string
}

// Options configure New.
type Options struct {
	// Version is the agent's version (sutra_agent_build_info).
	Version string
	// State returns the agent's current state. Required.
	State func() Snapshot
	// CacheDir is the binary cache whose size is reported ("": none).
	CacheDir string
	// CertFile is the agent's certificate (PEM) whose expiry is reported
	// ("": none).
	CertFile string
}

// Metrics is the agent's registry. Safe for concurrent use.
type Metrics struct {
	opts Options
	reg  *prometheus.Registry

	heartbeats    *prometheus.CounterVec
	fetchFailures atomic.Uint64
	fetchSeconds  *prometheus.HistogramVec
	fetchedBytes  prometheus.Counter
	probeSeconds  *prometheus.HistogramVec
}

// New builds the agent's registry.
func New(o Options) (*Metrics, error) {
	if o.State == nil {
		return nil, errors.New("agent metrics: Options.State is required")
	}
	m := &Metrics{
		opts: o,
		reg:  prometheus.NewRegistry(),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sutra", Subsystem: "agent", Name: "heartbeats_total",
			Help: "Heartbeats sent to the master, by result: ok or failed."}, []string{"result"}),
		fetchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "sutra", Subsystem: "agent", Name: "fetch_seconds",
			Help:    "Time to get the wanted storage-server (from the cache or downloaded and verified), by result: ok or failed.",
			Buckets: []float64{.001, .01, .1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, []string{"result"}),
		probeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "sutra", Subsystem: "agent", Name: "health_probe_seconds",
			Help:    "Latency of the nodes' HTTP health probes, by result: ok or failed.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"result"}),
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sutra", Subsystem: "agent", Name: "fetched_bytes_total",
			Help: "Bytes of binaries downloaded from the master (cache hits not counted)."}),
	}
	fetchFailures := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sutra", Subsystem: "agent", Name: "fetch_failures_total",
		Help: "Failed binary fetches from the master."}, func() float64 { return float64(m.fetchFailures.Load()) })
	m.heartbeats.WithLabelValues("ok")
	m.heartbeats.WithLabelValues("failed")
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sutra", Subsystem: "agent", Name: "build_info",
		Help:        "Always 1: the agent's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": o.Version, "goversion": runtime.Version()}})
	build.Set(1)
	m.reg.MustRegister(build, m.heartbeats, fetchFailures, m.fetchSeconds, m.fetchedBytes, m.probeSeconds, stateCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m, nil
}

// Registry is the agent's registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Heartbeat counts one heartbeat sent (err nil) or failed.
func (m *Metrics) Heartbeat(err error) {
	if err == nil {
		m.heartbeats.WithLabelValues("ok").Inc()
	} else {
		m.heartbeats.WithLabelValues("failed").Inc()
	}
}

// Fetched records one fetch of a binary that took d: downloaded tells
// whether it was downloaded (bytes long) rather than found in the cache;
// err is its failure (also counted as FetchFailed by the caller).
func (m *Metrics) Fetched(d time.Duration, bytes int64, downloaded bool, err error) {
	if err != nil {
		m.fetchSeconds.WithLabelValues("failed").Observe(d.Seconds())
		return
	}
	m.fetchSeconds.WithLabelValues("ok").Observe(d.Seconds())
	if downloaded && bytes > 0 {
		m.fetchedBytes.Add(float64(bytes))
	}
}

// HealthProbe records one node health probe that took d (err nil: healthy).
func (m *Metrics) HealthProbe(d time.Duration, err error) {
	r := "ok"
	if err != nil {
		r = "failed"
	}
	m.probeSeconds.WithLabelValues(r).Observe(d.Seconds())
}

// FetchFailed counts one failed binary fetch.
func (m *Metrics) FetchFailed() { m.fetchFailures.Add(1) }

// Path is the route of the agent's metrics endpoint.
const Path = "/metrics"

// Handler serves GET /metrics; every other path is 404.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 2}))
	return mux
}

// Serve serves Handler on addr until ctx ends. It returns an error when
// addr cannot be bound; ready, when set, receives the bound address.
func (m *Metrics) Serve(ctx context.Context, addr string, log *slog.Logger, ready func(net.Addr)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("agent metrics: listen on %s (agent.metrics_addr): %w", addr, err)
	}
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
		log.Info("metrics endpoint serving", "addr", ln.Addr().String(), "path", Path)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent metrics: %w", err)
	}
	return nil
}

// Summary is the compact state an agent sends with every heartbeat
// (agent/controlplane puts it on the wire as an AgentSummary), so that the
// master's fleet-wide view needs no scraping of every machine.
type Summary struct {
	NodesRunning       uint32
	RestartsTotal      uint64
	CacheBytes         uint64
	FetchFailuresTotal uint64
	// CertExpiryUnix is the agent certificate's NotAfter; 0 when unknown.
	CertExpiryUnix int64
}

// Summary is the heartbeat summary of the agent's current state.
func (m *Metrics) Summary() Summary {
	s := m.opts.State()
	out := Summary{FetchFailuresTotal: m.fetchFailures.Load()}
	for _, n := range s.Nodes {
		if n.State == "running" {
			out.NodesRunning++
		}
		out.RestartsTotal += uint64(max(n.Restarts, 0))
	}
	if b, err := dirBytes(m.opts.CacheDir); err == nil {
		out.CacheBytes = uint64(b)
	}
	if t, err := certExpiry(m.opts.CertFile); err == nil {
		out.CertExpiryUnix = t.Unix()
	}
	return out
}

// maxCacheEntries bounds the walk of the cache directory at scrape time.
const maxCacheEntries = 10_000

// dirBytes is the size of the regular files under dir (at most
// maxCacheEntries entries are looked at).
func dirBytes(dir string) (int64, error) {
	if dir == "" {
		return 0, errors.New("no cache dir")
	}
	var total int64
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		n++
		if n > maxCacheEntries {
			return fs.SkipAll
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total, err
}

// maxCertFile bounds the certificate file read at scrape time.
const maxCertFile = 64 << 10

// certExpiry is the NotAfter of the first certificate in the PEM file.
func certExpiry(path string) (time.Time, error) {
	if path == "" {
		return time.Time{}, errors.New("no certificate file")
	}
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	buf := make([]byte, maxCertFile)
	n, _ := f.Read(buf)
	return parseCertExpiry(buf[:n])
}

// parseCertExpiry is the NotAfter of the first CERTIFICATE block in pemData.
func parseCertExpiry(pemData []byte) (time.Time, error) {
	for {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			return time.Time{}, errors.New("no PEM certificate")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("certificate: %w", err)
		}
		return c.NotAfter, nil
	}
}
