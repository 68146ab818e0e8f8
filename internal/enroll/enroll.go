// Package enroll is the client side of enrollment (issue 12), shared by the
// agent (agent/controlplane, which stores the result) and by tools that
// act as agents (bench/fleet, tests).
//
// Trust model. The caller has a join token SUTRA1.<CA fingerprint>.<id>.
// <secret> and nothing else. Enroll fetches the master's CA bundle over TLS
// without verifying the server (there is no trust anchor yet; nothing
// secret is sent), accepts it only if its first certificate has the token's
// fingerprint (internal/mtls.PinnedRoots: a different master or a man in
// the middle is refused here, with an error naming both fingerprints,
// before the secret has left the machine), then sends the secret, a CSR for
// the caller's key (which never leaves the caller), the agent id and the
// hostname in the Enroll RPC over a connection verified against that CA
// only. The master answers the agent's certificate.
package enroll

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// ErrRefused: the master refused the enrollment (a bad, used or expired
// token, an agent id in use, a bad request); retrying will not help.
var ErrRefused = errors.New("enrollment refused")

// ErrIDInUse: the agent id is enrolled and alive on another machine
// (ALREADY_EXISTS). The token was not spent; the enrollment succeeds once
// the other machine is gone (offline) or removed by the operator.
var ErrIDInUse = errors.New("agent id in use")

// Request is one enrollment.
type Request struct {
	// Addr is the master's gRPC address, host:port.
	Addr string
	// Token is the join token.
	Token jointoken.Token
	// AgentID and Hostname name the agent.
	AgentID, Hostname string
	// Key is the agent's private key (mtls.NewKey).
	Key crypto.Signer
}

// Result is what the master issued.
type Result struct {
	// CertChain is the agent's certificate chain, DER, leaf first.
	CertChain [][]byte
	// CAPEM is the CA bundle the agent trusts the master by.
	CAPEM []byte
	// Roots is CAPEM's pinned CA as a pool.
	Roots *x509.CertPool
	// Labels the token gives the agent.
	Labels map[string]string
	// ReleasePublicKeys are the fleet's release public keys, as the master
	// sent them (unvalidated; the agent uses them only when its config pins
	// none).
	ReleasePublicKeys []string
}

// TLSConfig is the agent's client TLS configuration for the result.
func (r Result) TLSConfig(key crypto.Signer) *tls.Config {
	return mtls.ClientConfig(r.Roots, &tls.Certificate{Certificate: r.CertChain, PrivateKey: key})
}

// Enroll runs one enrollment (see the package doc). A pin mismatch wraps
// mtls.ErrPinMismatch, a refusal ErrRefused, an agent id alive elsewhere
// ErrIDInUse; other errors (the master is unreachable) may be retried.
func Enroll(ctx context.Context, req Request) (Result, error) {
	anon := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // the answer is checked against the token's pin
	bundle, err := call(ctx, req.Addr, anon, func(ctx context.Context, rpc gridv1.GridMasterClient) (*gridv1.CABundleResponse, error) {
		return rpc.CABundle(ctx, &gridv1.CABundleRequest{})
	})
	if err != nil {
		return Result{}, fmt.Errorf("fetch the master's CA: %w", err)
	}
	roots, _, err := mtls.PinnedRoots(bundle.GetCaBundlePem(), req.Token.Fingerprint)
	if err != nil {
		return Result{}, fmt.Errorf("master %s: %w", req.Addr, err)
	}
	csr, err := mtls.NewCSR(req.Key, req.AgentID)
	if err != nil {
		return Result{}, err
	}
	whole := req.Token.String()
	secret := whole[strings.LastIndexByte(whole, '.')+1:]
	resp, err := call(ctx, req.Addr, mtls.ClientConfig(roots, nil), func(ctx context.Context, rpc gridv1.GridMasterClient) (*gridv1.EnrollResponse, error) {
		return rpc.Enroll(ctx, &gridv1.EnrollRequest{
			TokenId: req.Token.ID, TokenSecret: secret, CsrDer: csr, AgentId: req.AgentID, Hostname: req.Hostname,
		})
	})
	if err != nil {
		switch status.Code(err) {
		case codes.AlreadyExists:
			return Result{}, fmt.Errorf("%w: %s", ErrIDInUse, status.Convert(err).Message())
		case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition:
			return Result{}, fmt.Errorf("%w: %s", ErrRefused, status.Convert(err).Message())
		}
		return Result{}, fmt.Errorf("enroll: %w", err)
	}
	if len(resp.GetCertChainDer()) == 0 {
		return Result{}, fmt.Errorf("%w: the master answered no certificate", ErrRefused)
	}
	return Result{CertChain: resp.GetCertChainDer(), CAPEM: resp.GetCaBundlePem(), Roots: roots, Labels: resp.GetLabels(), ReleasePublicKeys: resp.GetReleasePublicKeys()}, nil
}

// call makes one RPC on a short-lived connection with cfg.
func call[R any](ctx context.Context, addr string, cfg *tls.Config, fn func(context.Context, gridv1.GridMasterClient) (R, error)) (R, error) {
	var zero R
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return zero, err
	}
	defer conn.Close()
	return fn(ctx, gridv1.NewGridMasterClient(conn))
}
