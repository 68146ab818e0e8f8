package grpcapi

import (
	"context"
	"errors"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/releases"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// ReleaseServer is the ReleaseService (proto/grid/v1/release.proto):
// pinning agents (master/fleet) and yanking versions (master/releases).
// Every method is an operator RPC; the interceptors where the server is
// built check the token.
type ReleaseServer struct {
	gridv1.UnimplementedReleaseServiceServer
	f   *fleet.Fleet
	rel *releases.Releases
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
	y, err := s.rel.Yank(ctx, art, req.GetVersion(), actor.From(ctx))
	if err != nil {
		return nil, releaseStatus(err)
	}
	return &gridv1.YankVersionResponse{Yanked: yankToPB(y), RunningAgentIds: Running(s.f.Agents(), art, req.GetVersion())}, nil
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
