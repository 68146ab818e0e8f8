// Package metrics is the master's Prometheus instrumentation: one
// non-global registry (no prometheus.DefaultRegisterer, no global state)
// with the master's collectors, served on GET /metrics.
//
// Other packages do not import Prometheus: they satisfy small interfaces
// that this package reads at scrape time (FleetSource, CatalogSource,
// DownloadSource) or call plain methods (ObserveHTTP), and the gRPC server
// takes this package's interceptors. Names follow the Prometheus
// conventions: prefix sutra_, base units (_seconds, _bytes), _total for
// counters, and no per-agent or per-node label on any series.
package metrics

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
)

// Namespace prefixes every metric of the master and the agent.
const Namespace = "sutra"

// latencyBuckets (seconds) suit the control plane's short calls: 0.5 ms
// to 10 s.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics is the master's registry and the collectors fed by calls (HTTP
// requests, RPCs, heartbeats, store transactions). Safe for concurrent use.
type Metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	httpBytes     *prometheus.CounterVec
	heartbeats    *prometheus.CounterVec
	heartbeatTime prometheus.Histogram
	enrollments   *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	storeTxn      *prometheus.HistogramVec
	summaries     *summaries
	summaryOf     SummaryOf
	events        *eventCounter
	downloads     *downloads
}

// New builds the registry with the build info, the Go and process
// collectors and the call-fed collectors; Add* registers the scrape-time
// readers of the master's parts.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg:       reg,
		summaries: newSummaries(),
		events:    newEventCounter(),
		downloads: newDownloads(),
		grpc: grpcprom.NewServerMetrics(
			grpcprom.WithServerCounterOptions(grpcprom.WithNamespace(Namespace)),
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramNamespace(Namespace), grpcprom.WithHistogramBuckets(latencyBuckets)),
		),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "http_requests_total",
			Help: "HTTP requests answered, by route pattern (never the raw path), method and status code."}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "http_request_duration_seconds",
			Help: "Time to answer an HTTP request (whole downloads included), by route pattern and method.", Buckets: latencyBuckets}, []string{"route", "method"}),
		httpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "http_response_bytes_total",
			Help: "Response body bytes written, by route pattern (downloads are the /binaries/ routes)."}, []string{"route"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "heartbeats_total",
			Help: "Agent heartbeats handled, by gRPC status code."}, []string{"code"}),
		heartbeatTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "heartbeat_handling_seconds",
			Help: "Time the master took to handle one heartbeat (authorization and rate limit included).", Buckets: latencyBuckets}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "enrollments_total",
			Help: "Agent enrollments (Enroll RPC), by result: ok or failed."}, []string{"result"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "auth_failures_total",
			Help: "Requests refused for their credentials (gRPC UNAUTHENTICATED/PERMISSION_DENIED, HTTP 401/403), by server."}, []string{"server"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "rate_limited_total",
			Help: "Requests refused by the rate limits (gRPC RESOURCE_EXHAUSTED from master/ratelimit, HTTP 429), by server."}, []string{"server"}),
		storeTxn: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "store_transaction_seconds",
			Help: "Latency of fleet store operations, by operation (apply, apply_if, get, scan).", Buckets: latencyBuckets}, []string{"op"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help:        "Always 1: the master's version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	build.Set(1)
	for _, s := range []string{"ok", "failed"} {
		m.enrollments.WithLabelValues(s)
	}
	for _, s := range []string{"grpc", "http"} {
		m.authFailures.WithLabelValues(s)
		m.rateLimited.WithLabelValues(s)
	}
	m.heartbeats.WithLabelValues("OK")
	reg.MustRegister(build, m.grpc, m.httpRequests, m.httpDuration, m.httpBytes, m.heartbeats, m.heartbeatTime,
		m.enrollments, m.authFailures, m.rateLimited, m.storeTxn, summaryCollector{m.summaries}, m.events.total,
		m.downloads.served, m.downloads.bytes, m.downloads.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the master's registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text (or OpenMetrics)
// format; errors of single collectors are served with the rest.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
}

// Path is the route of the metrics endpoint on the HTTP port.
const Path = "/metrics"
