package auth

import (
	"context"
	"crypto/x509"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/actor"
)

// CertCheck decides whether agent agentID may still use its verified
// certificate cert (revocation): nil lets it through; an error refuses the
// call with PERMISSION_DENIED and the error's message, which should say
// what to do.
type CertCheck func(agentID string, cert *x509.Certificate) error

// SetCertCheck installs the revocation check run on every call made with
// an agent certificate (the fleet's denylist). Safe to call while serving.
func (p *Policy) SetCertCheck(c CertCheck) {
	if c == nil {
		p.certCheck.Store(nil)
		return
	}
	p.certCheck.Store(&c)
}

// CheckAgentCert runs the revocation check for agentID's certificate (nil
// if none is installed). HTTP routes that accept agent certificates use it.
func (p *Policy) CheckAgentCert(agentID string, cert *x509.Certificate) error {
	if c := p.certCheck.Load(); c != nil {
		return (*c)(agentID, cert)
	}
	return nil
}

func (p *Policy) checkCert(agentID string, cert *x509.Certificate) error {
	if err := p.CheckAgentCert(agentID, cert); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

// enrollMethods are the public methods a revoked certificate may still
// call: a machine enrolling again may present whatever it holds, and
// Enroll checks the revocation of the id it asks for itself.
var enrollMethods = map[string]bool{
	gridService + "CABundle": true,
	gridService + "Enroll":   true,
}

// Actor is who makes the call ctx belongs to, as the interceptors put it
// there: "operator@<ip>", "agent:<id>", or actor.Master for none.
func Actor(ctx context.Context) string { return actor.From(ctx) }

// CloseAgent ends every stream agentID holds open on this server, each
// with err as its status (the revocation), and returns how many. Calls
// after it are refused by the revocation check itself.
func (p *Policy) CloseAgent(agentID string, err error) int {
	return p.streams.close(agentID, revokedCause{err: err})
}

// revokedCause is the cancellation cause of a stream CloseAgent ended.
type revokedCause struct{ err error }

func (r revokedCause) Error() string { return r.err.Error() }

// streamRegistry tracks the live streams opened with agent certificates,
// by agent id. Entries are removed when their stream ends, so it holds no
// more than the streams open now.
type streamRegistry struct {
	mu sync.Mutex
	m  map[string]map[*liveStream]struct{}
}

type liveStream struct{ cancel context.CancelCauseFunc }

// track returns ctx cancelled by close(agentID) and the func to call when
// the stream ends.
func (r *streamRegistry) track(ctx context.Context, agentID string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ls := &liveStream{cancel: cancel}
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]map[*liveStream]struct{}{}
	}
	set := r.m[agentID]
	if set == nil {
		set = map[*liveStream]struct{}{}
		r.m[agentID] = set
	}
	set[ls] = struct{}{}
	r.mu.Unlock()
	return ctx, func() {
		r.mu.Lock()
		// After close(agentID) the set is detached (and ls not in a newer one).
		if cur := r.m[agentID]; cur != nil {
			delete(cur, ls)
			if len(cur) == 0 {
				delete(r.m, agentID)
			}
		}
		r.mu.Unlock()
		cancel(nil)
	}
}

func (r *streamRegistry) close(agentID string, cause error) int {
	r.mu.Lock()
	set := r.m[agentID]
	delete(r.m, agentID)
	r.mu.Unlock()
	for ls := range set {
		ls.cancel(cause)
	}
	return len(set)
}

// open is how many streams agentID holds (tests).
func (r *streamRegistry) open(agentID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m[agentID])
}
