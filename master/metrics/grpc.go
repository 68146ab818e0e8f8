package metrics

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gRPC methods with metrics of their own (proto/grid/v1).
const (
	heartbeatMethod = "/grid.v1.GridMaster/Heartbeat"
	enrollMethod    = "/grid.v1.GridMaster/Enroll"
)

// UnaryServerInterceptor counts and times every unary RPC by method and
// code (the grpc-ecosystem interceptors: sutra_grpc_server_*), plus the
// master's own heartbeat, enrollment, auth-failure and rate-limit
// counters. Put it right after panic recovery so that it sees every
// answer, refusals of the later interceptors included.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	inner := m.grpc.UnaryServerInterceptor()
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := inner(ctx, req, info, handler)
		m.observeRPC(info.FullMethod, err, time.Since(start))
		if err == nil && info.FullMethod == heartbeatMethod && m.summaryOf != nil {
			if agent, sum, ok := m.summaryOf(req); ok {
				m.summaries.record(agent, sum)
			}
		}
		return resp, err
	}
}

// WithHeartbeatSummary makes the interceptors read the agents' heartbeat
// summaries with f (master/grpcapi.HeartbeatSummary: only the gRPC adapter
// knows the wire types). Call it before serving.
func (m *Metrics) WithHeartbeatSummary(f SummaryOf) *Metrics {
	m.summaryOf = f
	return m
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	inner := m.grpc.StreamServerInterceptor()
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := inner(srv, ss, info, handler)
		m.observeRPC(info.FullMethod, err, time.Since(start))
		return err
	}
}

// InitializeMetrics pre-creates the RPC series of every method registered
// on s at zero (call it after every service is registered).
func (m *Metrics) InitializeMetrics(s *grpc.Server) { m.grpc.InitializeMetrics(s) }

func (m *Metrics) observeRPC(method string, err error, d time.Duration) {
	code := status.Code(err)
	switch method {
	case heartbeatMethod:
		m.heartbeats.WithLabelValues(code.String()).Inc()
		m.heartbeatTime.Observe(d.Seconds())
	case enrollMethod:
		if err == nil {
			m.enrollments.WithLabelValues("ok").Inc()
		} else {
			m.enrollments.WithLabelValues("failed").Inc()
		}
	}
	switch code {
	case codes.Unauthenticated, codes.PermissionDenied:
		m.authFailures.WithLabelValues("grpc").Inc()
	case codes.ResourceExhausted:
		if s, ok := status.FromError(err); ok && strings.HasPrefix(s.Message(), "rate limited:") {
			m.rateLimited.WithLabelValues("grpc").Inc()
		}
	}
}
