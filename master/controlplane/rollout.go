package controlplane

import (
	"context"
	"fmt"
	"net/http"

	"google.golang.org/grpc"

	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/rollout"
	"github.com/sutragrid/sutra/master/rolloutapi"
)

// Rollouts opens the rollout controller (master/rollout) on the control
// plane's store and fleet, with cat checking that a version is published
// (nil: not checked), registers the RolloutService on grpcSrv, and mounts GET /api/rollouts[/{id}] on routes behind
// the operator token. requireSigned also refuses a version with an
// unsigned binary for a platform of the target set (the fleet has release
// public keys, so its agents would refuse it). The caller runs its Run
// until the servers stop.
func (c *ControlPlane) Rollouts(ctx context.Context, grpcSrv *grpc.Server, routes *http.ServeMux, operator *auth.Policy, cat rollout.Catalog, requireSigned bool) (*rollout.Controller, error) {
	ro, err := rollout.New(ctx, rollout.Options{Store: c.st, Fleet: c.fleet, Catalog: cat, Yanks: c.rel, RequireSigned: requireSigned, Log: c.log.With("component", "rollout"),
		Fence: c.coord.Fence})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	if grpcSrv != nil {
		grpcapi.NewRollout(ro).Register(grpcSrv)
	}
	if c.relSrv != nil {
		// sutra binaries yank --rollback: a rollback-only rollout.
		c.relSrv.WithRollback(grpcapi.RollbackVia(ro))
	}
	if routes != nil && operator != nil {
		m := http.NewServeMux()
		rolloutapi.Register(m, ro)
		guarded := operator.RequireOperator(m)
		for _, p := range rolloutapi.Routes {
			routes.Handle(p, guarded)
		}
	}
	return ro, nil
}
