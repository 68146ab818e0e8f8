// Package auth decides who may call what on the master (issue 12): the
// operator token, the gRPC interceptors that check every call, and the HTTP
// middleware in front of the fleet routes. It is composed where the servers
// are built (package master); no API package carries its own checks.
//
// Trust model. There are two kinds of callers and neither can do the
// other's job:
//
//   - An agent is identified by its client certificate alone: the TLS
//     handshake (master/pki.ServerTLSConfig) verified that it chains to the
//     master's client CA, is valid now and is meant for client
//     authentication, and the certificate names the agent id
//     (pki.AgentIDFromCert). Agent RPCs (RoleAgent) need such a certificate,
//     and the request's agent_id must be the certificate's: registering or
//     heartbeating as another agent is PERMISSION_DENIED.
//   - An operator (the CLI, the fleet HTTP API) presents the operator token
//     as "authorization: Bearer <token>" (gRPC metadata or HTTP header). The
//     master makes it once, 32 bytes from crypto/rand, in
//     {data_dir}/admin.token (0600), and compares it in constant time.
//     Operator RPCs (RoleOperator: every method not listed otherwise, so a
//     new RPC is closed by default) need it; without it the answer is
//     UNAUTHENTICATED (HTTP 401).
//
// An agent certificate on an operator RPC, or the operator token on an agent
// RPC, is PERMISSION_DENIED. RolePublic methods (the CA bundle, enrollment,
// which a join token authorizes, and the health service) need nothing.
//
// Revocation (revoke.go): a certificate whose agent an operator revoked
// (sutra agents revoke) is refused on every call, whatever the method's
// role, except CABundle and Enroll (a re-enrolling machine may still hold
// it); the check (SetCertCheck, the fleet's denylist) runs on every call,
// and the streams a revoked agent holds open are closed at once
// (CloseAgent).
//
// Every call that passes carries its actor (master/actor, Actor):
// "operator@<ip>" for the operator token, "agent:<id>" for an agent
// certificate; the fleet records it in the events the call causes.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/pki"
)

// TokenFile is the operator token's file name in the data dir.
const TokenFile = "admin.token"

// tokenBytes is the operator token's entropy.
const tokenBytes = 32

// maxTokenFile bounds what LoadOrCreateToken reads.
const maxTokenFile = 4096

// LoadOrCreateToken returns the operator token kept in path, making it (32
// bytes from crypto/rand, base64url, file mode 0600, written atomically) if
// the file does not exist; created reports that it did.
func LoadOrCreateToken(path string) (token string, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) > maxTokenFile {
			return "", false, fmt.Errorf("operator token %s is larger than %d bytes: remove it and restart the master to make a new one", path, maxTokenFile)
		}
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
			return "", false, fmt.Errorf("operator token %s is malformed (under 16 characters or several words): remove it and restart the master to make a new one", path)
		}
		return tok, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("read operator token: %w", err)
	}
	var raw [tokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, fmt.Errorf("make operator token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write operator token: %w", err)
	}
	return tok, true, nil
}

// Role is who may call a method.
type Role int

// Roles.
const (
	// RoleOperator needs the operator token (the default for any method).
	RoleOperator Role = iota
	// RoleAgent needs an agent certificate naming the request's agent_id.
	RoleAgent
	// RolePublic needs nothing.
	RolePublic
)

func (r Role) String() string {
	switch r {
	case RoleAgent:
		return "agent"
	case RolePublic:
		return "public"
	}
	return "operator"
}

// gridService is the control plane's gRPC service name (proto/grid/v1).
const gridService = "/grid.v1.GridMaster/"

// roles lists the methods that are not operator RPCs.
var roles = map[string]Role{
	gridService + "CABundle":         RolePublic,
	gridService + "Enroll":           RolePublic,
	gridService + "RegisterAgent":    RoleAgent,
	gridService + "Heartbeat":        RoleAgent,
	gridService + "RenewCertificate": RoleAgent,
}

// healthService is the standard health service, public like a load
// balancer's probe needs.
const healthService = "/grpc.health.v1.Health/"

// MethodRole is the role of a full gRPC method name ("/pkg.Service/Method").
func MethodRole(fullMethod string) Role {
	if r, ok := roles[fullMethod]; ok {
		return r
	}
	if strings.HasPrefix(fullMethod, healthService) {
		return RolePublic
	}
	return RoleOperator
}

// Policy checks callers against the operator token and agent certificates.
type Policy struct {
	tokenSum [sha256.Size]byte
	// certCheck is the revocation check (SetCertCheck); nil: none.
	certCheck atomic.Pointer[CertCheck]
	streams   streamRegistry
}

// NewPolicy returns the policy for operator token token (LoadOrCreateToken).
func NewPolicy(token string) (*Policy, error) {
	if len(token) < 16 {
		return nil, errors.New("operator token is shorter than 16 characters")
	}
	return &Policy{tokenSum: sha256.Sum256([]byte(token))}, nil
}

// checkToken compares in constant time (hashing first, so the length of the
// token does not leak either).
func (p *Policy) checkToken(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], p.tokenSum[:]) == 1
}

type agentKey struct{}

// Agent returns the agent id the caller's verified certificate names, as put
// in ctx by the interceptors for agent RPCs.
func Agent(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(agentKey{}).(string)
	return id, ok
}

// peerAgent returns the agent id of the connection's verified client
// certificate; cert is nil for a connection without one.
func peerAgent(ctx context.Context) (id string, cert *x509.Certificate, err error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return "", nil, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return "", nil, nil
	}
	cert = ti.State.VerifiedChains[0][0]
	id, err = pki.AgentIDFromCert(cert)
	return id, cert, err
}

// peerAddr is the caller's address, for its actor.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// bearer returns the token of the "authorization: Bearer …" metadata.
func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) == 0 {
		return ""
	}
	return bearerOf(v[0])
}

func bearerOf(h string) string {
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}

// agentIDer is every agent request (they all carry agent_id).
type agentIDer interface{ GetAgentId() string }

// Messages callers see.
const (
	hintOperator = "pass the operator token with --token or SUTRA_TOKEN (the master wrote it to {data_dir}/" + TokenFile + ")"
	hintAgent    = "agents authenticate with the client certificate they get by enrolling with a join token (sutra tokens create on the master)"
)

// authorize checks one call; req is nil for streams.
func (p *Policy) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	role := MethodRole(method)
	agentID, cert, err := peerAgent(ctx)
	hasCert := cert != nil
	if role == RolePublic {
		if hasCert && err == nil && !enrollMethods[method] {
			if err := p.checkCert(agentID, cert); err != nil {
				return nil, err
			}
			return actor.With(ctx, actor.Agent(agentID)), nil
		}
		return ctx, nil
	}
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "%s: the client certificate does not name an agent: %v", method, err)
	}
	if hasCert {
		if err := p.checkCert(agentID, cert); err != nil {
			return nil, err
		}
	}
	tok := bearer(ctx)
	switch role {
	case RoleAgent:
		if !hasCert {
			if tok != "" {
				return nil, status.Errorf(codes.PermissionDenied, "%s is an agent call and the operator token cannot act as an agent: %s", method, hintAgent)
			}
			return nil, status.Errorf(codes.Unauthenticated, "%s needs an agent client certificate: %s", method, hintAgent)
		}
		if r, ok := req.(agentIDer); ok && r.GetAgentId() != agentID {
			return nil, status.Errorf(codes.PermissionDenied, "this connection is authenticated as agent %q and cannot act as agent %.64q", agentID, r.GetAgentId())
		}
		return actor.With(context.WithValue(ctx, agentKey{}, agentID), actor.Agent(agentID)), nil
	default:
		if hasCert {
			return nil, status.Errorf(codes.PermissionDenied, "%s is an operator call and agent %q's certificate cannot make it: %s", method, agentID, hintOperator)
		}
		if tok == "" {
			return nil, status.Errorf(codes.Unauthenticated, "%s needs the operator token: %s", method, hintOperator)
		}
		if !p.checkToken(tok) {
			return nil, status.Errorf(codes.Unauthenticated, "%s: the operator token is wrong: %s", method, hintOperator)
		}
		return actor.With(ctx, actor.Operator(peerAddr(ctx))), nil
	}
}

// UnaryServerInterceptor checks every unary call.
func (p *Policy) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := p.authorize(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor checks every stream when it opens. (No agent RPC
// is a stream; one would be checked for the certificate only.) A stream
// opened with an agent certificate is tracked until it ends, so that
// CloseAgent can end it when the agent is revoked: the stream then ends
// with the revocation's status.
func (p *Policy) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := p.authorize(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		id, cert, _ := peerAgent(ctx)
		if cert == nil || id == "" {
			return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
		}
		ctx, done := p.streams.track(ctx, id)
		defer done()
		// Checked again once tracked: a revocation between the first check
		// and track would otherwise miss this stream (a revocation is in
		// the denylist before CloseAgent runs).
		if err := p.checkCert(id, cert); err != nil {
			return err
		}
		err = handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
		var rc revokedCause
		if errors.As(context.Cause(ctx), &rc) {
			return rc.err
		}
		return err
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// RequireOperator lets a request through to h only with the operator token
// in "Authorization: Bearer …"; otherwise it answers 401 JSON.
func (p *Policy) RequireOperator(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearerOf(r.Header.Get("Authorization"))
		if tok == "" || !p.checkToken(tok) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sutra"`)
			msg := "missing operator token"
			if tok != "" {
				msg = "wrong operator token"
			}
			httpjson.WriteError(w, http.StatusUnauthorized, msg+": send it as 'Authorization: Bearer <token>' (the master wrote it to {data_dir}/"+TokenFile+")")
			return
		}
		h.ServeHTTP(w, r.WithContext(actor.With(r.Context(), actor.Operator(r.RemoteAddr))))
	})
}
