package master

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/metrics"
	"github.com/sutragrid/sutra/master/ratelimit"
)

// gRPC connection policy. Agents keep one connection and call at least
// every heartbeat interval (5 s by default); operators' CLIs come and go.
const (
	// grpcKeepaliveMinTime is the shortest client ping interval tolerated;
	// a client pinging more often is sent GOAWAY (too_many_pings).
	// Clients may ping without an active RPC (agents between heartbeats).
	grpcKeepaliveMinTime = 10 * time.Second
	// grpcKeepaliveTime: after this long without activity the master pings
	// the client, and drops the connection when no answer comes within
	// grpcKeepaliveTimeout, so dead peers do not hold streams open.
	grpcKeepaliveTime    = time.Minute
	grpcKeepaliveTimeout = 20 * time.Second
	// grpcMaxConnectionIdle closes connections with no RPC for this long.
	grpcMaxConnectionIdle = 15 * time.Minute
)

// newGRPCServer builds the master's one *grpc.Server: TLS only (creds),
// bounded messages and streams, the keepalive policy above, and, composed
// for every service registered on it, panic recovery (so that a bug in a
// handler answers INTERNAL with the stack in the log instead of taking the
// master down), the per-address rate limit, authorization (master/auth: who
// may call what), then the per-identity and enrollment rate limits
// (master/ratelimit). The address limit runs before authorization so that a
// flood of unauthenticated calls is cut before any token check or handler
// work; the identity limit runs after it because only then is the identity
// known and trusted (nobody can drain an agent's bucket by claiming its id).
func newGRPCServer(opts Options, log *slog.Logger, creds credentials.TransportCredentials, policy *auth.Policy, lim *ratelimit.Limits, met *metrics.Metrics) *grpc.Server {
	rec := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.Error("panic in gRPC handler: answered INTERNAL; this is a bug, please report it with this log",
			"method", method, "panic", p, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error in %s: the master recovered and logged it; retry, and report it if it happens again", method)
	})
	rl := &ratelimit.GRPC{Limits: lim, Identity: callerIdentity, EnrollMethod: enrollMethod, Logger: log}
	// Metrics (master/metrics, nil: none) right after recovery: they see
	// every answer, the refusals of the later interceptors included.
	unary := []grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(rec)}
	stream := []grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(rec)}
	if met != nil {
		unary, stream = append(unary, met.UnaryServerInterceptor()), append(stream, met.StreamServerInterceptor())
	}
	unary = append(unary, rl.Before(), policy.UnaryServerInterceptor(), rl.After())
	stream = append(stream, rl.BeforeStream(), policy.StreamServerInterceptor(), rl.AfterStream())
	return grpc.NewServer(
		grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(opts.GRPCMaxRecvMsgSize),
		grpc.MaxConcurrentStreams(opts.GRPCMaxConcurrentStreams),
		// Per-connection memory: every agent holds its own connection
		// (its identity is its TLS client certificate), so 10,000 agents
		// are 10,000 connections. The write buffer goes back to a pool
		// after each flush instead of staying with an idle connection, and
		// frames are read straight from the TLS connection, which buffers
		// records itself (bench/fleet: peak RSS per connection).
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(0),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             grpcKeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: grpcMaxConnectionIdle,
			Time:              grpcKeepaliveTime,
			Timeout:           grpcKeepaliveTimeout,
		}),
	)
}

// enrollMethod is the enrollment RPC (proto/grid/v1), whose failed
// attempts are rate limited per address.
const enrollMethod = "/grid.v1.GridMaster/Enroll"

// callerIdentity is the rate-limit identity of a call that passed
// authorization: its agent, or the operator; "" for public calls.
func callerIdentity(ctx context.Context, method string) string {
	switch auth.MethodRole(method) {
	case auth.RoleAgent:
		if id, ok := auth.Agent(ctx); ok {
			return "agent " + id
		}
		return ""
	case auth.RoleOperator:
		return "operator"
	}
	return ""
}

// DefaultGRPCMaxConcurrentStreams is Options.GRPCMaxConcurrentStreams' default.
const DefaultGRPCMaxConcurrentStreams = 64

// DefaultGRPCMaxRecvMsgSize is Options.GRPCMaxRecvMsgSize's default: the
// control plane's message limit, which the largest legitimate registration
// fits in.
const DefaultGRPCMaxRecvMsgSize = limits.MaxMsgSize
