package grpcapi

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/releases"
	"github.com/sutragrid/sutra/master/rollout"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// ReleaseServer is the ReleaseService (proto/grid/v1/release.proto):
// pinning agents (master/fleet) and yanking versions (master/releases).
// Every method is an operator RPC; the interceptors where the server is
// built check the token.
type ReleaseServer struct {
	gridv1.UnimplementedReleaseServiceServer
	f        *fleet.Fleet
	rel      *releases.Releases
	rollback atomic.Pointer[Rollback]
}

// Rollback starts a rollback-only rollout of artifact moving each agent of
// to (id -> version) back, and returns its id (master/rollout's
// Controller.Start with Spec.RollbackTo).
type Rollback func(ctx context.Context, artifactName string, to map[string]string) (rolloutID string, err error)

// MaxRollbackAgents bounds YankVersionRequest.rollback_to.
const MaxRollbackAgents = 10_000

// WithRollback makes YankVersion's rollback_to a rollout through fn;
// without it the agents are set one by one. It may be called while the
// server serves (the controller starts after the service is registered).
func (s *ReleaseServer) WithRollback(fn Rollback) *ReleaseServer {
	s.rollback.Store(&fn)
	return s
}

// RollbackVia is the Rollback of a rollout controller: a rollback-only
// rollout (Spec.RollbackTo), fast, without canary or soak.
func RollbackVia(c *rollout.Controller) Rollback {
	return func(ctx context.Context, artifactName string, to map[string]string) (string, error) {
		r, err := c.Start(ctx, rollout.Spec{Artifact: artifactName, RollbackTo: to})
		if err != nil {
			return "", rolloutStatus(err)
		}
		return r.ID, nil
	}
}

// NewRelease returns the ReleaseService over f and rel.
func NewRelease(f *fleet.Fleet, rel *releases.Releases) *ReleaseServer {
	return &ReleaseServer{f: f, rel: rel}
}

// Register adds the ReleaseService to g.
func (s *ReleaseServer) Register(g *grpc.Server) { gridv1.RegisterReleaseServiceServer(g, s) }

func (s *ReleaseServer) PinAgent(ctx context.Context, req *gridv1.PinAgentRequest) (*gridv1.Agent, error) {
	if err := fleet.ValidatePin(req.GetAgentId(), req.GetArtifact(), req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	a, err := s.f.Pin(ctx, req.GetAgentId(), req.GetArtifact(), req.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return agentToPB(a), nil
}

func (s *ReleaseServer) UnpinAgent(ctx context.Context, req *gridv1.UnpinAgentRequest) (*gridv1.Agent, error) {
	a, err := s.f.Unpin(ctx, req.GetAgentId(), req.GetArtifact())
	if err != nil {
		return nil, toStatus(err)
	}
	return agentToPB(a), nil
}

// artifactOrDefault: an empty artifact is storage-server, like the CLI's default.
func artifactOrDefault(a string) string {
	if a == "" {
		return fleet.PinStorageServer
	}
	return a
}

func releaseStatus(err error) error {
	switch {
	case errors.Is(err, releases.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, releases.ErrFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, err.Error())
}

func yankToPB(y releases.Yank) *gridv1.YankedVersion {
	return &gridv1.YankedVersion{Artifact: y.Artifact, Version: y.Version, YankedBy: y.By, YankedUnix: unix(y.At)}
}

func (s *ReleaseServer) YankVersion(ctx context.Context, req *gridv1.YankVersionRequest) (*gridv1.YankVersionResponse, error) {
	art := artifactOrDefault(req.GetArtifact())
	if err := releases.Validate(art, req.GetVersion()); err != nil {
		return nil, releaseStatus(err)
	}
	to := req.GetRollbackTo()
	if err := s.validRollback(art, req.GetVersion(), to); err != nil {
		return nil, err
	}
	y, err := s.rel.Yank(ctx, art, req.GetVersion(), actor.From(ctx))
	if err != nil {
		return nil, releaseStatus(err)
	}
	out := &gridv1.YankVersionResponse{Yanked: yankToPB(y), RunningAgentIds: Running(s.f.Agents(), art, req.GetVersion())}
	if len(to) == 0 {
		return out, nil
	}
	if fn := s.rollback.Load(); fn != nil {
		id, err := (*fn)(ctx, art, to)
		if err != nil {
			st, ok := status.FromError(err)
			if !ok {
				st = status.Convert(toStatus(err))
			}
			return nil, status.Errorf(st.Code(), "%s %s is yanked, but the rollback rollout did not start: %s", art, req.GetVersion(), st.Message())
		}
		out.RolloutId = id
		return out, nil
	}
	// No rollout controller: one agent at a time, pinned ones refused.
	for _, id := range slices.Sorted(maps.Keys(to)) {
		c := fleet.VersionChange{AgentID: id}
		if art == fleet.PinAgent {
			c.AgentVersion = to[id]
		} else {
			c.StorageServerVersion = to[id]
		}
		if _, err := s.f.SetDesiredVersion(ctx, c); err != nil {
			out.RollbackFailures = append(out.RollbackFailures, id+": "+status.Convert(toStatus(err)).Message())
			continue
		}
		out.RolledBackAgentIds = append(out.RolledBackAgentIds, id)
	}
	return out, nil
}

// validRollback checks rollback_to: bounded, valid agent ids, exact
// versions that are neither the yanked one nor yanked themselves.
func (s *ReleaseServer) validRollback(art, yanked string, to map[string]string) error {
	if len(to) > MaxRollbackAgents {
		return status.Errorf(codes.InvalidArgument, "rollback_to names %d agents (at most %d)", len(to), MaxRollbackAgents)
	}
	for id, v := range to {
		if err := fleet.ValidateID("agent", id); err != nil {
			return toStatus(err)
		}
		if err := releases.Validate(art, v); err != nil {
			return status.Errorf(codes.InvalidArgument, "rollback_to[%s]: %v", id, err)
		}
		if v == yanked || s.rel.Yanked(art, v) {
			return status.Errorf(codes.InvalidArgument, "rollback_to[%s]: %s %s is yanked; pick an earlier version", id, art, v)
		}
	}
	return nil
}

func (s *ReleaseServer) UnyankVersion(ctx context.Context, req *gridv1.UnyankVersionRequest) (*gridv1.UnyankVersionResponse, error) {
	art := artifactOrDefault(req.GetArtifact())
	was, err := s.rel.Unyank(ctx, art, req.GetVersion())
	if err != nil {
		return nil, releaseStatus(err)
	}
	return &gridv1.UnyankVersionResponse{WasYanked: was}, nil
}

func (s *ReleaseServer) ListYanked(ctx context.Context, _ *gridv1.ListYankedRequest) (*gridv1.ListYankedResponse, error) {
	out := &gridv1.ListYankedResponse{}
	for _, y := range s.rel.List() {
		out.Yanked = append(out.Yanked, yankToPB(y))
	}
	return out, nil
}

// Running returns the ids of the agents running artifactName's version:
// a node reporting it for storage-server, the agent itself for
// sutra-agent; sorted.
func Running(agents []fleet.Agent, artifactName, version string) []string {
	var out []string
	for _, a := range agents {
		switch artifactName {
		case fleet.PinAgent:
			if a.AgentVersion == version {
				out = append(out, a.ID)
			}
		default:
			if slices.ContainsFunc(a.Nodes, func(n fleet.NodeStatus) bool { return n.Version == version }) {
				out = append(out, a.ID)
			}
		}
	}
	slices.Sort(out)
	return out
}
