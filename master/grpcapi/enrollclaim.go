package grpcapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
)

// enrollClaim is the record of the last enrollment of an agent id
// (store.TableMeta, key "enrollment/<id>").
type enrollClaim struct {
	AgentID  string    `json:"agent_id"`
	Hostname string    `json:"hostname"`
	TokenID  string    `json:"token_id"`
	At       time.Time `json:"at"`
}

func enrollKey(id string) []byte { return []byte("enrollment/" + id) }

// enrollGraceBeats: an enrolled agent registers within seconds; until it
// did, or until this many heartbeat intervals passed (the fleet's default
// offline threshold), its id counts as taken.
const enrollGraceBeats = 6

// claimEnrollment takes agent id for an enrollment from host with a
// compare-and-swap on its enrollment record: a machine that enrolled under
// the id within the grace period (and has not been locked out by a lifted
// revocation since) or that is enrolling right now holds it, and the
// answer is ALREADY_EXISTS naming both hosts. release gives the claim back
// (the previous record) when the enrollment fails after all.
func (s *Server) claimEnrollment(ctx context.Context, t *Trust, id, host, tokenID string, rv fleet.Revocation) (release func(), err error) {
	if t.Store == nil {
		return func() {}, nil
	}
	key := enrollKey(id)
	old, rev, err := t.Store.Get(ctx, store.TableMeta, key)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "enrollment record: %v; retry", err)
	}
	now := t.Now()
	if old != nil {
		var prev enrollClaim
		if json.Unmarshal(old, &prev) == nil {
			grace := enrollGraceBeats * s.f.HeartbeatInterval()
			_, regErr := s.f.Agent(id)
			unregistered := regErr != nil
			lockedOut := !rv.UnrevokedAt.IsZero() && prev.At.Before(rv.UnrevokedAt)
			if unregistered && !lockedOut && now.Sub(prev.At) < grace {
				return nil, status.Errorf(codes.AlreadyExists,
					"agent id %q was enrolled %s ago by host %.256q, which has not registered yet; host %.256q cannot take it: give this machine another agent_id, or retry after %s if the first enrollment was abandoned",
					id, now.Sub(prev.At).Round(time.Second), prev.Hostname, host, (grace - now.Sub(prev.At)).Round(time.Second))
			}
		}
	}
	b, err := json.Marshal(enrollClaim{AgentID: id, Hostname: host, TokenID: tokenID, At: now})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode enrollment record: %v", err)
	}
	newRev, err := t.Store.ApplyIf(ctx, []store.Cond{store.IfRevision(store.TableMeta, key, rev)}, []store.Op{store.Put(store.TableMeta, key, b)})
	if errors.Is(err, store.ErrConflict) {
		return nil, status.Errorf(codes.AlreadyExists,
			"another machine is enrolling as agent %q right now; host %.256q cannot take the id too: give this machine another agent_id", id, host)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "enrollment record: %v; retry", err)
	}
	return func() {
		undo := store.Delete(store.TableMeta, key)
		if old != nil {
			undo = store.Put(store.TableMeta, key, old)
		}
		// Best effort, and only if nobody claimed the id since.
		rctx := context.WithoutCancel(ctx)
		if _, err := t.Store.ApplyIf(rctx, []store.Cond{store.IfRevision(store.TableMeta, key, newRev)}, []store.Op{undo}); err != nil && !errors.Is(err, store.ErrConflict) {
			s.log.Warn("enrollment claim not released", "agent", id, "err", err)
		}
	}, nil
}

// settleEnrollment removes agent id's enrollment claim once the agent has
// registered: the claim only guards the window between Enroll and the first
// registration, and a record per id ever enrolled would only grow. Best
// effort: a claim left behind is harmless (a registered id is never held by
// it) and is removed at the next registration.
func (s *Server) settleEnrollment(ctx context.Context, id string) {
	if s.trust == nil || s.trust.Store == nil {
		return
	}
	key := enrollKey(id)
	old, rev, err := s.trust.Store.Get(ctx, store.TableMeta, key)
	if err != nil || old == nil {
		return
	}
	_, err = s.trust.Store.ApplyIf(context.WithoutCancel(ctx), []store.Cond{store.IfRevision(store.TableMeta, key, rev)}, []store.Op{store.Delete(store.TableMeta, key)})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.Warn("enrollment claim not removed after registration", "agent", id, "err", err)
	}
}

// allowAfterRevocation lets a certificate just issued for id through a
// lifted revocation (its NotBefore is backdated, possibly before the
// revocation).
func (s *Server) allowAfterRevocation(ctx context.Context, id string, der []byte) error {
	if _, ok := s.f.Revocation(id); !ok {
		return nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return status.Errorf(codes.Internal, "parse the certificate just issued: %v", err)
	}
	if err := s.f.AllowCert(ctx, id, c.SerialNumber); err != nil {
		return toStatus(err)
	}
	return nil
}
