package master

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/sutragrid/sutra/master/binapi"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/controlplane"
	"github.com/sutragrid/sutra/master/ratelimit"
)

// Defaults of Options, as the design document states them.
const (
	DefaultHTTPPort    = 7001
	DefaultGRPCPort    = 7000
	DefaultBinariesDir = "./binaries"
	DefaultDataDir     = "./data"
)

// Options configures Run. The zero value is the design document's master:
// gRPC on :7000, HTTP on :7001, ./binaries, ./data.
type Options struct {
	// HTTPAddr is the HTTP listen address (binary distribution API).
	// Empty: ":7001". Port 0 picks a free port (tests); Ready reports it.
	HTTPAddr string
	// GRPCAddr is the gRPC listen address (control plane, health, reflection).
	// Empty: ":7000". Port 0 picks a free port.
	GRPCAddr string
	// BinariesDir holds the published binaries (BINARIES_DIR); created if missing.
	// Empty: "./binaries".
	BinariesDir string
	// DataDir holds the master's state, such as the checksum cache
	// (SUTRA_DATA_DIR); created if missing. Empty: "./data".
	DataDir string
	// MaxConcurrentDownloads caps simultaneous downloads; beyond it clients
	// get 503 with Retry-After. Zero: 256.
	MaxConcurrentDownloads int
	// DownloadStallTimeout closes a download that makes no write progress
	// (the client stopped reading) for this long and frees its slot
	// (DOWNLOAD_STALL_TIMEOUT). Zero: 30s.
	DownloadStallTimeout time.Duration
	// MaxEgress is the bandwidth budget of all binary downloads together in
	// bytes per second, shared fairly (SUTRA_MAX_EGRESS). Zero: unlimited.
	MaxEgress int64
	// MaxDownloadRate caps each binary download in bytes per second
	// (SUTRA_MAX_DOWNLOAD_RATE). Zero: unlimited.
	MaxDownloadRate int64
	// ShutdownTimeout bounds how long running downloads and RPCs may finish
	// after ctx ends before connections are cut. Zero: 30s.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout closes connections that do not send their request
	// headers in time (slow-loris). Zero: 5s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Zero: 2m.
	IdleTimeout time.Duration
	// HashWorkers bounds parallel hashing of binaries. Zero: GOMAXPROCS.
	HashWorkers int
	// Settle is how long a new file's size and mtime must stay unchanged
	// before it is hashed. Zero: 1s.
	Settle time.Duration
	// GRPCMaxConcurrentStreams caps concurrent RPCs on one client
	// connection; more wait for a free slot. Zero: 64.
	GRPCMaxConcurrentStreams uint32
	// GRPCMaxRecvMsgSize bounds one received gRPC message; a larger one is
	// refused with RESOURCE_EXHAUSTED. Zero: 4 MiB, the control plane's
	// limit (internal/limits), which a full registration fits in.
	GRPCMaxRecvMsgSize int
	// Logger receives structured logs. Nil: discard.
	Logger *slog.Logger
	// Console receives the human start-up banner and one line per binary
	// (the design document's output). Nil: none.
	Console io.Writer
	// Ready, when set, is called once both servers serve and the binaries
	// found at start-up are hashed (the API answers 503 Retry-After for those
	// still being hashed before that).
	Ready func(Addrs)
	// ControlPlane tunes the control plane (fleet limits, liveness timing);
	// the zero value takes the fleet's defaults.
	ControlPlane controlplane.Options
	// Advertise lists extra names (DNS names or IP addresses) agents and
	// operators use to reach the master (--advertise, SUTRA_ADVERTISE),
	// added to the server certificate in {DataDir}/tls.
	Advertise []string
	// ClientCertLifetime is the lifetime of agent certificates; zero: 30 days.
	ClientCertLifetime time.Duration
	// RateLimits are the request rate limits of both servers, per identity,
	// per source address and for failed enrollments per address
	// (--rate-limit-*); zero Rates take ratelimit's defaults, Off disables.
	RateLimits ratelimit.Config
	// HTTPTLS serves the HTTP port over HTTPS (--http-tls) with the same
	// server certificate as gRPC ({DataDir}/tls or the operator's), TLS 1.2
	// or later, verifying an agent's client certificate when it presents one.
	HTTPTLS bool
	// PrivateDownloads makes the binary routes (/api/binaries…,
	// /api/artifacts…, /binaries/…) need a verified agent client certificate
	// or the operator token (--private-downloads); 401 JSON otherwise. It
	// needs HTTPTLS: without it agents could not download at all.
	PrivateDownloads bool
	// AgentCheck, when set, refuses more agents on the private binary
	// routes, beyond the revocation check the policy always runs.
	AgentCheck func(agentID string) error
	// PublicMetrics serves GET /metrics without the operator token
	// (--public-metrics, SUTRA_PUBLIC_METRICS=1), for a Prometheus that
	// scrapes without credentials on a trusted network.
	PublicMetrics bool
	// ReleasePublicKeys are handed to agents at enrollment
	// (--release-public-keys); an agent uses them only when its config
	// pins none. The master never holds the private key.
	ReleasePublicKeys []string
	// Store chooses where the fleet's state lives: bbolt in DataDir (the
	// zero value) or etcd shared by several masters.
	Store StoreOptions
	// NoMetrics turns the metrics off: no /metrics route, no
	// instrumentation (for overhead measurements).
	NoMetrics bool

	// testWiring, set by this package's tests only, sees the catalog and
	// may register test services on the gRPC server before serving starts.
	testWiring func(*catalog.Catalog, *grpc.Server)
}

// Store backends (--store).
const (
	StoreBbolt = "bbolt"
	StoreEtcd  = "etcd"
)

// StoreOptions are --store and its etcd settings.
type StoreOptions struct {
	// Backend is StoreBbolt (default) or StoreEtcd.
	Backend string
	// EtcdEndpoints are etcd's client URLs (required with etcd).
	EtcdEndpoints []string
	// EtcdPrefix is the grid's key prefix in etcd; empty: /sutra/.
	EtcdPrefix string
	// EtcdCert, EtcdKey and EtcdCA are PEM files for TLS to etcd.
	EtcdCert, EtcdKey, EtcdCA string
	// MasterID names this master among the masters (required with etcd).
	MasterID string
	// LeaderLease is the lease of the registration and the leadership;
	// zero: 5 s.
	LeaderLease time.Duration
}

// ErrPrivateDownloadsNeedTLS: --private-downloads without --http-tls.
var ErrPrivateDownloadsNeedTLS = errors.New("master: --private-downloads needs --http-tls: over plain HTTP agents cannot present their certificates, so they could not download (only the operator token would work)")

// Addrs are the bound listen addresses (host:port).
type Addrs struct {
	HTTP string
	GRPC string
}

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"HTTPAddr", o.HTTPAddr}, {"GRPCAddr", o.GRPCAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("master: %s %q: %w", a.name, a.addr, err))
		}
	}
	if o.MaxEgress < 0 || o.MaxDownloadRate < 0 {
		errs = append(errs, fmt.Errorf("master: MaxEgress %d and MaxDownloadRate %d must not be negative", o.MaxEgress, o.MaxDownloadRate))
	}
	if o.MaxConcurrentDownloads < 0 {
		errs = append(errs, fmt.Errorf("master: MaxConcurrentDownloads %d is negative", o.MaxConcurrentDownloads))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ShutdownTimeout", o.ShutdownTimeout}, {"DownloadStallTimeout", o.DownloadStallTimeout}, {"ReadHeaderTimeout", o.ReadHeaderTimeout}, {"IdleTimeout", o.IdleTimeout}, {"Settle", o.Settle}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("master: %s %s is negative", d.name, d.v))
		}
	}
	if o.HashWorkers < 0 {
		errs = append(errs, fmt.Errorf("master: HashWorkers %d is negative", o.HashWorkers))
	}
	if err := o.RateLimits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("master: %w", err))
	}
	if o.PrivateDownloads && !o.HTTPTLS {
		errs = append(errs, ErrPrivateDownloadsNeedTLS)
	}
	switch o.Store.Backend {
	case "", StoreBbolt:
	case StoreEtcd:
		if len(o.Store.EtcdEndpoints) == 0 || o.Store.MasterID == "" {
			errs = append(errs, errors.New("master: the etcd store needs EtcdEndpoints and MasterID"))
		}
	default:
		errs = append(errs, fmt.Errorf("master: store %q: want bbolt or etcd", o.Store.Backend))
	}
	if o.GRPCMaxRecvMsgSize < 0 || o.GRPCMaxRecvMsgSize > 64<<20 {
		errs = append(errs, fmt.Errorf("master: GRPCMaxRecvMsgSize %d is out of range (0 for the default, at most 64 MiB)", o.GRPCMaxRecvMsgSize))
	}
	return errors.Join(errs...)
}

func (o *Options) setDefaults() {
	if o.HTTPAddr == "" {
		o.HTTPAddr = fmt.Sprintf(":%d", DefaultHTTPPort)
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = fmt.Sprintf(":%d", DefaultGRPCPort)
	}
	if o.BinariesDir == "" {
		o.BinariesDir = DefaultBinariesDir
	}
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.MaxConcurrentDownloads == 0 {
		o.MaxConcurrentDownloads = 256
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.DownloadStallTimeout == 0 {
		o.DownloadStallTimeout = binapi.DefaultStallTimeout
	}
	if o.ReadHeaderTimeout == 0 {
		o.ReadHeaderTimeout = 5 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 2 * time.Minute
	}
	if o.GRPCMaxConcurrentStreams == 0 {
		o.GRPCMaxConcurrentStreams = DefaultGRPCMaxConcurrentStreams
	}
	if o.GRPCMaxRecvMsgSize == 0 {
		o.GRPCMaxRecvMsgSize = DefaultGRPCMaxRecvMsgSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Console == nil {
		o.Console = io.Discard
	}
}
