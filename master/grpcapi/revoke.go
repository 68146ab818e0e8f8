package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/fleet"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// revokedAgentPB is the answer of RevokeAgent and UnrevokeAgent: the
// agent's record, or for an id that is not registered, a record holding
// only the id and the revocation.
func (s *Server) revokedAgentPB(r fleet.Revocation) *gridv1.Agent {
	if a, err := s.f.Agent(r.AgentID); err == nil {
		return agentToPB(a)
	}
	out := &gridv1.Agent{AgentId: r.AgentID}
	if r.Active {
		out.Revoked, out.RevokedUnix, out.RevokedBy = true, unix(r.RevokedAt), r.By
	}
	return out
}

func (s *Server) RevokeAgent(ctx context.Context, req *gridv1.RevokeAgentRequest) (*gridv1.Agent, error) {
	if err := fleet.ValidateID("agent", req.GetAgentId()); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.f.Revoke(ctx, req.GetAgentId(), req.GetReason())
	if err != nil {
		return nil, toStatus(err)
	}
	// The denylist already refuses the agent's next call (it is in memory
	// before the commit); now close what it holds open.
	if s.trust != nil && s.trust.CloseAgent != nil {
		s.trust.CloseAgent(r.AgentID, status.Error(codes.PermissionDenied, r.RevokedMessage()))
	}
	s.log.Warn("agent revoked", "agent", r.AgentID, "by", r.By, "reason", r.Reason)
	return s.revokedAgentPB(r), nil
}

func (s *Server) UnrevokeAgent(ctx context.Context, req *gridv1.UnrevokeAgentRequest) (*gridv1.Agent, error) {
	if err := fleet.ValidateID("agent", req.GetAgentId()); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.f.Unrevoke(ctx, req.GetAgentId())
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Warn("agent revocation lifted", "agent", r.AgentID, "by", r.UnrevokedBy)
	return s.revokedAgentPB(r), nil
}
