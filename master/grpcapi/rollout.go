package grpcapi

import (
	"context"
	"errors"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/rollout"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// RolloutServer is the RolloutService (proto/grid/v1/rollout.proto) over
// a rollout controller. Every method is an operator RPC; the interceptors
// where the server is built check the token.
type RolloutServer struct {
	gridv1.UnimplementedRolloutServiceServer
	c *rollout.Controller
}

// NewRollout returns the RolloutService over c.
func NewRollout(c *rollout.Controller) *RolloutServer { return &RolloutServer{c: c} }

// Register adds the RolloutService to g.
func (s *RolloutServer) Register(g *grpc.Server) { gridv1.RegisterRolloutServiceServer(g, s) }

func rolloutStatus(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, rollout.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, rollout.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, rollout.ErrPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		return toStatus(err)
	}
	return status.Error(code, err.Error())
}

// maxMs bounds a duration field (rollout.MaxDuration).
const maxMs = uint64(rollout.MaxDuration / time.Millisecond)

// SpecFromPB checks the request's bounds (counts and ranges the spec's
// Validate cannot see once converted) and converts it.
func SpecFromPB(req *gridv1.StartRolloutRequest) (rollout.Spec, error) {
	bad := func(msg string) (rollout.Spec, error) {
		return rollout.Spec{}, status.Error(codes.InvalidArgument, msg)
	}
	switch {
	case len(req.GetAgents()) > rollout.MaxAgents:
		return bad("at most 10000 agents")
	case len(req.GetSelector()) > rollout.MaxSelector:
		return bad("at most 16 selector labels")
	case len(req.GetWaves()) > rollout.MaxWaves:
		return bad("at most 20 waves")
	case req.GetSoakMs() > maxMs || req.GetHealthyDeadlineMs() > maxMs || req.GetProgressDeadlineMs() > maxMs:
		return bad("durations are at most 7 days")
	case req.GetCanary() > rollout.MaxAgents || req.GetMaxParallel() > rollout.MaxAgents || req.GetRollbackParallel() > rollout.MaxAgents || req.GetMaxFailures() > rollout.MaxAgents:
		return bad("canary, max-parallel, rollback-parallel and max-failures are at most 10000")
	case math.IsNaN(req.GetMaxFailureRatio()) || math.IsInf(req.GetMaxFailureRatio(), 0):
		return bad("max_failure_ratio must be in 0..1")
	}
	s := rollout.Spec{
		Artifact: req.GetArtifact(), Version: req.GetVersion(), Agents: req.GetAgents(), Selector: req.GetSelector(),
		Canary: int(req.GetCanary()), MaxParallel: int(req.GetMaxParallel()), RollbackParallel: int(req.GetRollbackParallel()),
		Soak:             time.Duration(req.GetSoakMs()) * time.Millisecond,
		HealthyDeadline:  time.Duration(req.GetHealthyDeadlineMs()) * time.Millisecond,
		ProgressDeadline: time.Duration(req.GetProgressDeadlineMs()) * time.Millisecond,
		MaxFailures:      int(req.GetMaxFailures()), MaxFailureRatio: req.GetMaxFailureRatio(), OnFailure: req.GetOnFailure(),
	}
	for _, w := range req.GetWaves() {
		if w > 100 {
			return bad("waves are percentages 1..100")
		}
		s.Waves = append(s.Waves, int(w))
	}
	if err := s.WithDefaults().Validate(); err != nil {
		return rollout.Spec{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return s, nil
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// RolloutToPB converts a rollout.
func RolloutToPB(r rollout.Rollout) *gridv1.Rollout {
	s := r.Spec
	out := &gridv1.Rollout{
		Id: r.ID, Artifact: s.Artifact, Version: s.Version, State: string(r.State), Reason: r.Reason,
		Wave: uint32(max(r.Wave, 0)), Waves: uint32(r.Waves), RollingBack: r.RollingBack, Canary: uint32(s.Canary),
		MaxParallel: uint32(s.MaxParallel), RollbackParallel: uint32(s.RollbackParallel),
		SoakMs: uint64(s.Soak.Milliseconds()), HealthyDeadlineMs: uint64(s.HealthyDeadline.Milliseconds()), ProgressDeadlineMs: uint64(s.ProgressDeadline.Milliseconds()),
		MaxFailures: uint32(s.MaxFailures), MaxFailureRatio: s.MaxFailureRatio, OnFailure: s.OnFailure, Selector: s.Selector,
		CreatedBy: r.CreatedBy, CreatedUnixMs: unixMs(r.Created), StartedUnixMs: unixMs(r.Started), FinishedUnixMs: unixMs(r.Finished),
	}
	for _, w := range s.Waves {
		out.WavePercents = append(out.WavePercents, uint32(w))
	}
	for _, m := range r.Members {
		out.Agents = append(out.Agents, &gridv1.RolloutAgent{AgentId: m.ID, Wave: int32(m.Wave), State: string(m.State), Reason: m.Reason,
			PreviousVersion: m.Previous, StartedUnixMs: unixMs(m.Started), FinishedUnixMs: unixMs(m.Finished), LastLogLines: m.LastLogLines})
	}
	return out
}

func (s *RolloutServer) StartRollout(ctx context.Context, req *gridv1.StartRolloutRequest) (*gridv1.Rollout, error) {
	spec, err := SpecFromPB(req)
	if err != nil {
		return nil, err
	}
	var r rollout.Rollout
	if req.GetDryRun() {
		r, err = s.c.Prepare(ctx, spec)
	} else {
		r, err = s.c.Start(ctx, spec)
	}
	if err != nil {
		return nil, rolloutStatus(err)
	}
	out := RolloutToPB(r)
	out.DryRun = req.GetDryRun()
	return out, nil
}

func (s *RolloutServer) ListRollouts(context.Context, *gridv1.ListRolloutsRequest) (*gridv1.ListRolloutsResponse, error) {
	out := &gridv1.ListRolloutsResponse{}
	for _, r := range s.c.List() {
		out.Rollouts = append(out.Rollouts, RolloutToPB(r))
	}
	return out, nil
}

func checkID(id string) error {
	if id == "" || len(id) > 64 {
		return status.Error(codes.InvalidArgument, "rollout id must be 1..64 bytes")
	}
	return nil
}

func (s *RolloutServer) one(ctx context.Context, req *gridv1.RolloutRequest, fn func(context.Context, string) (rollout.Rollout, error)) (*gridv1.Rollout, error) {
	if err := checkID(req.GetId()); err != nil {
		return nil, err
	}
	r, err := fn(ctx, req.GetId())
	if err != nil {
		return nil, rolloutStatus(err)
	}
	return RolloutToPB(r), nil
}

func (s *RolloutServer) GetRollout(ctx context.Context, req *gridv1.RolloutRequest) (*gridv1.Rollout, error) {
	return s.one(ctx, req, func(_ context.Context, id string) (rollout.Rollout, error) { return s.c.Get(id) })
}

func (s *RolloutServer) PauseRollout(ctx context.Context, req *gridv1.RolloutRequest) (*gridv1.Rollout, error) {
	return s.one(ctx, req, s.c.Pause)
}

func (s *RolloutServer) ResumeRollout(ctx context.Context, req *gridv1.RolloutRequest) (*gridv1.Rollout, error) {
	return s.one(ctx, req, s.c.Resume)
}

func (s *RolloutServer) AbortRollout(ctx context.Context, req *gridv1.RolloutRequest) (*gridv1.Rollout, error) {
	return s.one(ctx, req, s.c.Abort)
}

func (s *RolloutServer) RollbackRollout(ctx context.Context, req *gridv1.RolloutRequest) (*gridv1.Rollout, error) {
	return s.one(ctx, req, s.c.Rollback)
}

func (s *RolloutServer) RetryRollout(ctx context.Context, req *gridv1.RolloutRequest) (*gridv1.Rollout, error) {
	return s.one(ctx, req, s.c.Retry)
}
