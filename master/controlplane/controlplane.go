// Package controlplane is the grid's control plane as one part of the
// master: the persistent fleet (bbolt in the data dir), its liveness sweep,
// the GridMaster gRPC service, the read-only fleet HTTP API and the backup
// route.
//
// It knows nothing of the master that runs it: Open receives the data dir
// and the logger, Register the servers to register on, Run the context of
// the sweep. Package master composes it with the catalog and the servers.
package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sutragrid/sutra/internal/version"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/fleetapi"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/releases"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/tokens"
)

// Options tune the control plane; zero values take the fleet's defaults.
type Options struct {
	// HeartbeatInterval agents are told to use (default 5 s).
	HeartbeatInterval time.Duration
	// DegradedAfter and OfflineAfter without a heartbeat (defaults 15 s and 30 s).
	DegradedAfter, OfflineAfter time.Duration
	// MaxAgents, MaxNodes and MaxWatchers cap registered agents, node
	// records and following event watchers (fleet.Options; defaults
	// 20,000, 100,000 and 64).
	MaxAgents, MaxNodes, MaxWatchers int
	// AgentGCThreshold removes agents offline for longer (fleet.Options:
	// zero means 24 h, negative never).
	AgentGCThreshold time.Duration
	// WrapStore, when set, wraps the store the fleet uses (master/metrics
	// times its transactions).
	WrapStore func(store.Store) store.Store
	// Store, when set, is the store to use (etcd, shared by several
	// masters); the control plane does not close it. Nil: bbolt in the
	// data dir, which the control plane opens and closes.
	Store store.Store
	// Coordinator is this master among the masters (master/cluster): who
	// leads the singletons. Nil: cluster.Single (alone).
	Coordinator cluster.Coordinator
}

// ServiceName is the gRPC service Register adds, as the health service
// reports it.
const ServiceName = "grid.v1.GridMaster"

// HealthSetter is the part of the gRPC health server the control plane
// uses (*health.Server implements it).
type HealthSetter interface {
	SetServingStatus(service string, status grpc_health_v1.HealthCheckResponse_ServingStatus)
}

// ControlPlane is an open fleet with its APIs. Open it, Register it on
// the servers, Run its sweep, Close it after the servers have stopped.
type ControlPlane struct {
	st store.Store
	// bolt is the bbolt store the control plane opened (nil with a shared
	// store): the backup route and Close are its.
	bolt  *store.Bolt
	coord cluster.Coordinator
	fleet *fleet.Fleet
	log   *slog.Logger
	// rel is the yank list (master/releases) on the same store.
	rel *releases.Releases
	// relSrv is the ReleaseService; Rollouts routes its yank --rollback
	// through the rollout controller.
	relSrv *grpcapi.ReleaseServer
}

// Open opens the fleet store in dataDir (grid.db) and the fleet on it.
// A nil log discards.
func Open(ctx context.Context, dataDir string, log *slog.Logger, opts Options) (*ControlPlane, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dataDir == "" {
		return nil, errors.New("control plane: no data dir")
	}
	var st store.Store = opts.Store
	var bolt *store.Bolt
	if st == nil {
		b, err := store.OpenDirOptions(dataDir, store.Options{Logger: log.With("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("control plane store: %w", err)
		}
		st, bolt = b, b
	}
	closeOwn := func() {
		if bolt != nil {
			_ = bolt.Close()
		}
	}
	coord := opts.Coordinator
	if coord == nil {
		coord = cluster.NewSingle(cluster.Member{ID: "local", Version: version.Version})
	}
	fst := st
	if opts.WrapStore != nil {
		fst = opts.WrapStore(st)
	}
	fo := fleet.Options{
		Store:             fst,
		Logger:            log.With("component", "fleet"),
		HeartbeatInterval: opts.HeartbeatInterval,
		DegradedAfter:     opts.DegradedAfter,
		OfflineAfter:      opts.OfflineAfter,
		MaxAgents:         opts.MaxAgents,
		MaxNodes:          opts.MaxNodes,
		MaxWatchers:       opts.MaxWatchers,
		AgentGCThreshold:  opts.AgentGCThreshold,
		MasterVersion:     version.Version,
		Coordinator:       coord,
	}
	// etcd caps the keys of one transaction (--max-txn-ops): the fleet's
	// group commits stay under it.
	if m, ok := st.(interface{ MaxTxnOps() int }); ok {
		fo.MaxBatchOps = m.MaxTxnOps()
	}
	if err := fo.Validate(); err != nil {
		closeOwn()
		return nil, fmt.Errorf("control plane: %w", err)
	}
	f, err := fleet.New(ctx, fo)
	if err != nil {
		closeOwn()
		// Options are valid: the fleet failed to load what the file holds.
		var fe *store.FileError
		if ctx.Err() == nil && bolt != nil && !errors.As(err, &fe) {
			err = store.Unreadable(bolt.Path(), err)
		}
		return nil, fmt.Errorf("control plane: %w", err)
	}
	rel, err := releases.Open(ctx, st)
	if err != nil {
		closeOwn()
		return nil, fmt.Errorf("control plane: %w", err)
	}
	return &ControlPlane{st: st, bolt: bolt, coord: coord, fleet: f, log: log, rel: rel}, nil
}

// Trust is what the control plane's trust RPCs and guarded routes need
// (issue 12).
type Trust struct {
	// PKI issues agent certificates at enrollment and renewal. Required.
	PKI *pki.PKI
	// Operator guards the fleet routes and the backup route (the gRPC
	// methods are guarded by its interceptors where the server is built).
	// Required.
	Operator *auth.Policy
	// ClientLifetime of agent certificates; 0: pki.DefaultClientLifetime.
	ClientLifetime time.Duration
	// ReleasePublicKeys are handed to agents at enrollment.
	ReleasePublicKeys []string
}

// fleetRoutes are the paths of the fleet API and the backup route, which
// need the operator token.
var fleetRoutes = []string{"/api/agents", "/api/agents/", "/api/nodes", "/api/nodes/", "/api/cluster", "/api/events", store.BackupPath}

// Register adds the GridMaster service (with the trust RPCs) to grpcSrv,
// the fleet routes and the backup route to routes behind the operator
// token, and reports the service SERVING on health (nil: none).
func (c *ControlPlane) Register(grpcSrv *grpc.Server, routes *http.ServeMux, health HealthSetter, trust Trust) error {
	if trust.PKI == nil || trust.Operator == nil {
		return errors.New("control plane: Trust.PKI and Trust.Operator are required")
	}
	tk, err := tokens.New(tokens.Options{Store: c.st, Fingerprint: trust.PKI.Fingerprint(), Logger: c.log.With("component", "tokens")})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	// Revocation: the fleet's denylist is checked on every call made with
	// an agent certificate; a revocation closes the agent's streams.
	f := c.fleet
	trust.Operator.SetCertCheck(func(id string, cert *x509.Certificate) error {
		if r, revoked := f.CertRevoked(id, cert.SerialNumber, cert.NotBefore); revoked {
			return errors.New(r.RevokedMessage())
		}
		return nil
	})
	grpcapi.New(c.fleet, c.log.With("component", "grpc")).
		WithTrust(grpcapi.Trust{PKI: trust.PKI, Tokens: tk, ClientLifetime: trust.ClientLifetime, Store: c.st, ReleasePublicKeys: trust.ReleasePublicKeys,
			CloseAgent: func(id string, err error) { trust.Operator.CloseAgent(id, err) }}).
		WithClusterStatus(c.ClusterStatus).
		Register(grpcSrv)
	c.relSrv = grpcapi.NewRelease(c.fleet, c.rel)
	c.relSrv.Register(grpcSrv)
	fm := http.NewServeMux()
	fleetapi.New(c.fleet).WithClusterStatus(c.ClusterStatus).Register(fm)
	// Loopback-only as well (see store.BackupHandler). etcd is backed up
	// with etcdctl snapshot (README "High availability").
	if c.bolt != nil {
		fm.Handle("GET "+store.BackupPath, store.BackupHandler(c.bolt, c.log.With("component", "backup")))
	}
	guarded := trust.Operator.RequireOperator(fm)
	for _, p := range fleetRoutes {
		routes.Handle(p, guarded)
	}
	if health != nil {
		health.SetServingStatus(ServiceName, grpc_health_v1.HealthCheckResponse_SERVING)
	}
	return nil
}

// Fleet is the control plane's fleet, for read-only views such as metrics.
func (c *ControlPlane) Fleet() *fleet.Fleet { return c.fleet }

// Run runs the fleet's liveness sweep until ctx ends.
func (c *ControlPlane) Run(ctx context.Context) error { return c.fleet.Run(ctx) }

// Close closes the fleet store the control plane opened (a shared store
// is its opener's to close); call it after Run has returned.
func (c *ControlPlane) Close() error {
	if c.bolt == nil {
		return nil
	}
	return c.bolt.Close()
}

// ClusterStatus is the masters, the leader and the store's health.
func (c *ControlPlane) ClusterStatus(ctx context.Context) cluster.Status {
	return cluster.StatusOf(ctx, c.coord, c.st)
}

// Coordinator is this master among the masters.
func (c *ControlPlane) Coordinator() cluster.Coordinator { return c.coord }

// Store is the control plane's store.
func (c *ControlPlane) Store() store.Store { return c.st }

// Releases is the yank list (sutra binaries yank), persisted in the
// control plane's store.
func (c *ControlPlane) Releases() *releases.Releases { return c.rel }
