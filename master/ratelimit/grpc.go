package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/retryinfo"
)

// GRPC applies Limits to a gRPC server. Compose its two halves around the
// authorization interceptor: Before (address) ahead of it, After (identity
// and enrollment) behind it.
type GRPC struct {
	// Limits are the stores. Nil: no limits.
	Limits *Limits
	// Identity names the authenticated caller of a call that passed
	// authorization ("" for a public call, which has no identity).
	Identity func(ctx context.Context, method string) string
	// EnrollMethod is the full name of the enrollment RPC, whose failures
	// are charged to the address's enrollment bucket.
	EnrollMethod string
	// Refused reports whether an enrollment error means the join token was
	// refused (it then costs FailureCost). Nil: codes.Unauthenticated.
	Refused func(error) bool
	// Logger gets one line per refused call at debug level and per
	// enrollment lock-out at warn level. Nil: discard.
	Logger *slog.Logger
}

func (g *GRPC) log() *slog.Logger {
	if g.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Logger
}

// Before is the unary interceptor of the address limit.
func (g *GRPC) Before() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := g.address(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// BeforeStream is Before for streams (checked when the stream opens).
func (g *GRPC) BeforeStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := g.address(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// After is the unary interceptor of the identity and enrollment limits.
func (g *GRPC) After() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := g.identity(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		if g.Limits == nil || g.Limits.Enroll == nil || info.FullMethod != g.EnrollMethod {
			return handler(ctx, req)
		}
		addr := PeerKey(ctx)
		if d := g.Limits.Enroll.Peek(addr); !d.OK {
			g.log().Warn("enrollment attempt refused: too many failed attempts from this address", "addr", addr, "retry_after", d.RetryAfter)
			return nil, Exhausted(d.RetryAfter, fmt.Sprintf(
				"too many failed enrollment attempts from %s (limit %s): this attempt was refused without checking its join token, even a correct one will be refused until the window passes", addr, g.Limits.Enroll.Rate()))
		}
		resp, err := handler(ctx, req)
		if err != nil && g.refused(err) {
			g.Limits.Enroll.Charge(addr, FailureCost)
		}
		return resp, err
	}
}

// AfterStream is After for streams (identity only: enrollment is unary).
func (g *GRPC) AfterStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := g.identity(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func (g *GRPC) refused(err error) bool {
	if g.Refused != nil {
		return g.Refused(err)
	}
	return status.Code(err) == codes.Unauthenticated
}

func (g *GRPC) address(ctx context.Context, method string) error {
	if g.Limits == nil || g.Limits.Address == nil {
		return nil
	}
	addr := PeerKey(ctx)
	if d := g.Limits.Address.Allow(addr); !d.OK {
		g.log().Debug("call refused: address over its rate limit", "addr", addr, "method", method, "retry_after", d.RetryAfter)
		return Exhausted(d.RetryAfter, fmt.Sprintf("%s: too many calls from %s (limit %s per address)", method, addr, g.Limits.Address.Rate()))
	}
	return nil
}

func (g *GRPC) identity(ctx context.Context, method string) error {
	if g.Limits == nil || g.Limits.Identity == nil || g.Identity == nil {
		return nil
	}
	id := g.Identity(ctx, method)
	if id == "" {
		return nil
	}
	if d := g.Limits.Identity.Allow(id); !d.OK {
		g.log().Debug("call refused: identity over its rate limit", "identity", id, "method", method, "retry_after", d.RetryAfter)
		return Exhausted(d.RetryAfter, fmt.Sprintf("%s: too many calls as %s (limit %s per identity)", method, id, g.Limits.Identity.Rate()))
	}
	return nil
}

// Exhausted is the RESOURCE_EXHAUSTED status of a refused call
// (internal/retryinfo: msg, the delay in words and a RetryInfo detail).
func Exhausted(retry time.Duration, msg string) error {
	return retryinfo.Error(retry, "rate limited: "+msg)
}

// PeerKey is the address key of a gRPC call's peer (AddrKey).
func PeerKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	return AddrKey(p.Addr.String())
}

// AddrKey is the bucket key of a remote address "host:port": the IPv4
// address, or the /64 prefix of an IPv6 address (one host commonly holds a
// whole /64, so a per-address limit on IPv6 would be no limit). Anything
// else (a Unix socket, an in-memory pipe) is kept as given, capped in length.
func AddrKey(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if len(host) > 64 {
			host = host[:64]
		}
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
