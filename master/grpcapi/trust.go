package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/tokens"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Trust is what the trust RPCs (CABundle, Enroll, RenewCertificate and the
// join token RPCs) need. Who may call them is checked before they run, by
// master/auth's interceptors where the server is built; these handlers
// check what the request asks for.
type Trust struct {
	// PKI issues agent certificates. Required.
	PKI *pki.PKI
	// Tokens is the join token registry. Required.
	Tokens *tokens.Tokens
	// ClientLifetime of issued certificates; 0: pki.DefaultClientLifetime.
	ClientLifetime time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Store keeps the enrollment claims (store.TableMeta, "enrollment/<id>")
	// that make concurrent enrollments under one id exclusive. Required.
	Store store.Store
	// CloseAgent, when set, is called once an agent's certificates are
	// revoked, to close what it holds open (auth.Policy.CloseAgent).
	CloseAgent func(agentID string, cause error)
	// ReleasePublicKeys are sent in every EnrollResponse (the agent uses
	// them only when its config pins none).
	ReleasePublicKeys []string
}

// maxCSRSize bounds a certificate signing request (a P-521 or RSA-4096 CSR
// is well under 2 KiB).
const maxCSRSize = 16 << 10

// WithTrust serves the trust RPCs with t (without it they are UNIMPLEMENTED).
// Call it before Register.
func (s *Server) WithTrust(t Trust) *Server {
	if t.Now == nil {
		t.Now = time.Now
	}
	s.trust = &t
	return s
}

func (s *Server) trustOrErr() (*Trust, error) {
	if s.trust == nil {
		return nil, status.Error(codes.Unimplemented, "this master does not enroll agents")
	}
	return s.trust, nil
}

func (s *Server) CABundle(ctx context.Context, _ *gridv1.CABundleRequest) (*gridv1.CABundleResponse, error) {
	t, err := s.trustOrErr()
	if err != nil {
		return nil, err
	}
	return &gridv1.CABundleResponse{CaBundlePem: t.PKI.CAPEM()}, nil
}

// errTokenRefused is every refusal of a join token: one answer whatever the
// reason, so that a caller learns nothing about which tokens exist.
var errTokenRefused = status.Error(codes.Unauthenticated,
	"join token refused: it is unknown, removed, expired, used up or its secret is wrong; create a new one with 'sutra tokens create' on the master")

func (s *Server) Enroll(ctx context.Context, req *gridv1.EnrollRequest) (*gridv1.EnrollResponse, error) {
	t, err := s.trustOrErr()
	if err != nil {
		return nil, err
	}
	if err := fleet.ValidateID("agent", req.GetAgentId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := limits.Text("hostname", req.GetHostname(), limits.MaxTextLen); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.GetCsrDer()) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request is larger than %d bytes", maxCSRSize)
	}
	// Malformed token fields are refused like wrong ones (without quoting them).
	if jointoken.ValidateID(req.GetTokenId()) != nil {
		return nil, errTokenRefused
	}
	secret, err := jointoken.ParseSecret(req.GetTokenSecret())
	if err != nil {
		return nil, errTokenRefused
	}
	// Everything that can be checked without spending a use of the token is
	// checked first.
	if _, err := pki.ParseCSR(req.GetCsrDer()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	rv, hasRv := s.f.Revocation(req.GetAgentId())
	if hasRv && rv.Active {
		return nil, status.Error(codes.PermissionDenied, rv.RevokedMessage())
	}
	if a, err := s.f.Agent(req.GetAgentId()); err == nil && a.Health != fleet.Offline &&
		!(hasRv && a.LastHeartbeat.Before(rv.UnrevokedAt)) { // a lifted revocation locked the old holder out
		return nil, status.Errorf(codes.AlreadyExists,
			"agent id %q is already enrolled and %s on host %q; host %.256q cannot take it: give this machine another agent_id, or stop the agent on %q and remove it (sutra agents rm) or revoke it (sutra agents revoke) first",
			a.ID, a.Health, a.Hostname, req.GetHostname(), a.Hostname)
	}
	// Claim the id (a compare-and-swap in the store), so that of several
	// machines enrolling under one new id at once exactly one gets a
	// certificate; the claim is given back if the enrollment fails.
	release, err := s.claimEnrollment(ctx, t, req.GetAgentId(), req.GetHostname(), req.GetTokenId(), rv)
	if err != nil {
		return nil, err
	}
	enrolled := false
	defer func() {
		if !enrolled {
			release()
		}
	}()
	info, err := t.Tokens.Consume(ctx, req.GetTokenId(), secret[:], t.Now())
	if err != nil {
		if errors.Is(err, tokens.ErrRefused) {
			s.log.Warn("enrollment refused", "agent", req.GetAgentId(), "hostname", req.GetHostname(), "token", req.GetTokenId())
			return nil, errTokenRefused
		}
		return nil, status.Errorf(codes.Unavailable, "join token store: %v; retry", err)
	}
	ctx = actor.With(ctx, actor.Token(info.ID))
	der, err := t.PKI.IssueClient(req.GetCsrDer(), req.GetAgentId(), t.ClientLifetime)
	if err != nil {
		return nil, issueStatus(err)
	}
	enrolled = true
	if err := s.allowAfterRevocation(ctx, req.GetAgentId(), der); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("enrolled on host %q with join token %s (use %d of %d)", req.GetHostname(), info.ID, info.Used, info.Uses)
	if err := s.f.Record(ctx, fleet.EventAgentEnrolled, req.GetAgentId(), msg); err != nil {
		s.log.Warn("enrollment event not recorded", "agent", req.GetAgentId(), "err", err)
	}
	s.log.Info("agent enrolled", "agent", req.GetAgentId(), "hostname", req.GetHostname(), "token", info.ID)
	return &gridv1.EnrollResponse{CertChainDer: [][]byte{der}, CaBundlePem: t.PKI.CAPEM(), Labels: info.Labels, ReleasePublicKeys: t.ReleasePublicKeys}, nil
}

func issueStatus(err error) error {
	switch {
	case errors.Is(err, pki.ErrBadCSR):
		return status.Errorf(codes.InvalidArgument, "%v", err)
	case errors.Is(err, pki.ErrCannotIssue):
		return status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	return status.Errorf(codes.Internal, "issue certificate: %v", err)
}

func (s *Server) RenewCertificate(ctx context.Context, req *gridv1.RenewCertificateRequest) (*gridv1.RenewCertificateResponse, error) {
	t, err := s.trustOrErr()
	if err != nil {
		return nil, err
	}
	id, ok := auth.Agent(ctx)
	if !ok || id != req.GetAgentId() {
		return nil, status.Error(codes.PermissionDenied, "renewal needs the agent's current client certificate")
	}
	if len(req.GetCsrDer()) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request is larger than %d bytes", maxCSRSize)
	}
	der, err := t.PKI.IssueClient(req.GetCsrDer(), id, t.ClientLifetime)
	if err != nil {
		return nil, issueStatus(err)
	}
	if err := s.allowAfterRevocation(ctx, id, der); err != nil {
		return nil, err
	}
	if err := s.f.Record(ctx, fleet.EventCertRenewed, id, "client certificate renewed by the agent"); err != nil {
		s.log.Warn("renewal event not recorded", "agent", id, "err", err)
	}
	return &gridv1.RenewCertificateResponse{CertChainDer: [][]byte{der}, CaBundlePem: t.PKI.CAPEM()}, nil
}

func (s *Server) CreateJoinToken(ctx context.Context, req *gridv1.CreateJoinTokenRequest) (*gridv1.CreateJoinTokenResponse, error) {
	t, err := s.trustOrErr()
	if err != nil {
		return nil, err
	}
	const maxTTL = int64(10 * 365 * 24 * time.Hour / time.Second)
	if req.GetTtlSecs() < 0 || req.GetTtlSecs() > maxTTL {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_secs %d is out of range 0..%d", req.GetTtlSecs(), maxTTL)
	}
	spec := tokens.Spec{
		TTL:       time.Duration(req.GetTtlSecs()) * time.Second,
		Uses:      int(min(req.GetUses(), 1<<30)),
		Labels:    req.GetLabels(),
		CreatedBy: auth.Actor(ctx),
	}
	tok, info, err := t.Tokens.Create(ctx, spec, t.Now())
	if err != nil {
		return nil, tokenStatus(err)
	}
	msg := fmt.Sprintf("join token %s created by %s (%d uses, expires %s)", info.ID, auth.Actor(ctx), info.Uses, info.Expires.UTC().Format(time.RFC3339))
	if err := s.f.Record(ctx, fleet.EventJoinTokenCreated, "", msg); err != nil {
		s.log.Warn("token event not recorded", "token", info.ID, "err", err)
	}
	return &gridv1.CreateJoinTokenResponse{Token: tok.String(), Info: joinTokenToPB(info, t.Now())}, nil
}

func (s *Server) ListJoinTokens(ctx context.Context, _ *gridv1.ListJoinTokensRequest) (*gridv1.ListJoinTokensResponse, error) {
	t, err := s.trustOrErr()
	if err != nil {
		return nil, err
	}
	infos, err := t.Tokens.List(ctx)
	if err != nil {
		return nil, tokenStatus(err)
	}
	now := t.Now()
	out := &gridv1.ListJoinTokensResponse{Tokens: make([]*gridv1.JoinToken, 0, len(infos))}
	for _, i := range infos {
		out.Tokens = append(out.Tokens, joinTokenToPB(i, now))
	}
	return out, nil
}

func (s *Server) RemoveJoinToken(ctx context.Context, req *gridv1.RemoveJoinTokenRequest) (*gridv1.RemoveJoinTokenResponse, error) {
	t, err := s.trustOrErr()
	if err != nil {
		return nil, err
	}
	if err := t.Tokens.Remove(ctx, req.GetId()); err != nil {
		return nil, tokenStatus(err)
	}
	if err := s.f.Record(ctx, fleet.EventJoinTokenRemoved, "", fmt.Sprintf("join token %s removed by %s", req.GetId(), auth.Actor(ctx))); err != nil {
		s.log.Warn("token event not recorded", "token", req.GetId(), "err", err)
	}
	return &gridv1.RemoveJoinTokenResponse{}, nil
}

func tokenStatus(err error) error {
	switch {
	case errors.Is(err, tokens.ErrNotFound):
		return status.Errorf(codes.NotFound, "%v: list them with 'sutra tokens'", err)
	case errors.Is(err, tokens.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%v", err)
	case errors.Is(err, tokens.ErrTooMany):
		return status.Errorf(codes.ResourceExhausted, "%v: remove unused ones with 'sutra tokens rm ID'", err)
	}
	return status.Errorf(codes.Unavailable, "join token store: %v; retry", err)
}

func joinTokenToPB(i tokens.Info, now time.Time) *gridv1.JoinToken {
	pb := &gridv1.JoinToken{
		Id:          i.ID,
		CreatedUnix: i.Created.Unix(),
		ExpiresUnix: i.Expires.Unix(),
		Uses:        uint32(max(i.Uses, 0)),
		Used:        uint32(max(i.Used, 0)),
		Labels:      i.Labels,
		CreatedBy:   i.CreatedBy,
		State:       i.State(now),
	}
	if !i.LastUsed.IsZero() {
		pb.LastUsedUnix = i.LastUsed.Unix()
	}
	return pb
}
