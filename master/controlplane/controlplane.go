// Package controlplane wires the grid's control plane into a running master:
// the persistent fleet (bbolt in the data dir), its liveness sweep, the
// GridMaster gRPC service and the read-only fleet HTTP API.
//
// It is the composition root of the master's control-plane packages, so that
// package master itself stays a server shell that knows nothing of fleets.
package controlplane

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sutragrid/sutra/internal/version"
	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/fleetapi"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/store"
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
}

// Starter returns a master.Options.ControlPlane function.
func Starter(opts Options) func(ctx context.Context, env master.Env) (func(), error) {
	return func(ctx context.Context, env master.Env) (func(), error) {
		return Start(ctx, env, opts)
	}
}

// Start opens the fleet store in env.DataDir, registers the GridMaster
// service and the fleet routes, and runs the liveness sweep until the
// returned stop is called.
func Start(ctx context.Context, env master.Env, opts Options) (stop func(), err error) {
	st, err := store.OpenDirOptions(env.DataDir, store.Options{Logger: env.Logger.With("component", "store")})
	if err != nil {
		return nil, fmt.Errorf("control plane store: %w", err)
	}
	f, err := fleet.New(ctx, fleet.Options{
		Store:             st,
		Logger:            env.Logger.With("component", "fleet"),
		HeartbeatInterval: opts.HeartbeatInterval,
		DegradedAfter:     opts.DegradedAfter,
		OfflineAfter:      opts.OfflineAfter,
		MaxAgents:         opts.MaxAgents,
		MaxNodes:          opts.MaxNodes,
		MaxWatchers:       opts.MaxWatchers,
		AgentGCThreshold:  opts.AgentGCThreshold,
		MasterVersion:     version.Version,
	})
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("control plane: %w", err)
	}
	grpcapi.New(f, env.Logger.With("component", "grpc")).Register(env.GRPC)
	fleetapi.New(f).Register(env.Mux)
	// Loopback-only until the API has authentication (see store.BackupHandler).
	env.Mux.Handle("GET "+store.BackupPath, store.BackupHandler(st, env.Logger.With("component", "backup")))
	if env.Health != nil {
		env.Health.SetServingStatus("grid.v1.GridMaster", grpc_health_v1.HealthCheckResponse_SERVING)
	}

	sweepCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = f.Run(sweepCtx) })
	return func() {
		cancel()
		wg.Wait()
		if err := st.Close(); err != nil {
			env.Logger.Error("close fleet store", "err", err)
		}
	}, nil
}
