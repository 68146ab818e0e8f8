// Package httpserver is the master's HTTP server layer: the one
// *http.Server of port 7001 and the handler chain in front of every API
// registered on its mux (the binary API, the fleet API, the backup route,
// and later the dashboard and metrics). No API package carries its own
// middleware; what all routes share lives here:
//   - a panic in any handler is logged with its stack and answered 500
//     JSON, never a crash;
//   - a path that is not canonical ("..", ".", "//", NUL) is refused 400
//     instead of redirected;
//   - the mux's own "404 page not found" and "405 method not allowed" become
//     JSON {"error": ...}, keeping the Allow header;
//   - request rate limits (master/ratelimit): every request takes a token
//     from its source address's bucket, and one that carries a credential
//     (the operator token, a client certificate) also from that credential's
//     bucket; over the limit the answer is 429 JSON with Retry-After. This
//     counts requests, not bytes: downloads are also capped in number
//     (the binary API's 503) and in bandwidth elsewhere.
//
// Net/http's own answers before any handler runs (400, 431, 501) are made
// JSON by internal/httpjson.Listener, which the caller serves on.
package httpserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/ratelimit"
)

// MaxHeaderBytes bounds one request's headers (net/http answers 431 beyond).
const MaxHeaderBytes = 64 << 10

// Options configure New.
type Options struct {
	// Routes is the mux every API registers on. Required.
	Routes *http.ServeMux
	// Logger receives panics (with their stacks) and net/http's own errors.
	// Nil: discard.
	Logger *slog.Logger
	// ReadHeaderTimeout closes connections that do not send their request
	// headers in time (slow-loris). Zero: none.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Zero: net/http's.
	IdleTimeout time.Duration
	// BaseContext is every request's parent context. Nil: context.Background().
	BaseContext context.Context
	// Limits are the request rate limits (their Address and Identity
	// stores). Nil: none.
	Limits *ratelimit.Limits
	// Observer, when set, sees every answered request (master/metrics).
	Observer Observer
}

// Observer records answered requests. route is the Routes pattern that
// matched ("" for none), never the raw path, so that its values stay
// bounded whatever clients request.
type Observer interface {
	ObserveHTTP(route, method string, code int, bytes int64, d time.Duration)
}

// New builds the master's HTTP server: Handler(o.Routes) with bounded
// headers and the timeouts in o. It sets no ReadTimeout or WriteTimeout:
// they would cut long downloads (a download that makes no progress is cut
// by the binary API's stall timeout).
func New(o Options) *http.Server {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := o.BaseContext
	if base == nil {
		base = context.Background()
	}
	return &http.Server{
		Handler:           observe(o.Observer, o.Routes, handler(o.Routes, log, o.Limits)),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
}

// Handler is the chain in front of mux, outermost first: panic recovery,
// canonical paths, JSON answers for unmatched routes and wrong methods (New
// adds the rate limits of its Options after panic recovery).
func Handler(mux *http.ServeMux, log *slog.Logger) http.Handler {
	return handler(mux, log, nil)
}

func handler(mux *http.ServeMux, log *slog.Logger, lim *ratelimit.Limits) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return recoverPanics(log, rateLimit(lim, log, canonicalPaths(jsonFallbacks(mux))))
}

// rateLimit answers 429 JSON with Retry-After (whole seconds, rounded up)
// when the request's source address, or the credential it carries, is over
// its limit. The address is the connection's (X-Forwarded-For and the like
// are not trusted). The credential's bucket is keyed by a hash of the
// credential, checked or not: a wrong token only spends its own bucket (and
// its address's), never the operator's.
func rateLimit(lim *ratelimit.Limits, log *slog.Logger, next http.Handler) http.Handler {
	if lim == nil || (lim.Address == nil && lim.Identity == nil) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := ratelimit.AddrKey(r.RemoteAddr)
		if d := lim.Address.Allow(addr); !d.OK {
			log.Debug("request refused: address over its rate limit", "addr", addr, "path", r.URL.Path, "retry_after", d.RetryAfter)
			tooMany(w, d.RetryAfter, fmt.Sprintf("too many requests from %s (limit %s per address)", addr, lim.Address.Rate()))
			return
		}
		if id, what := credential(r); id != "" {
			if d := lim.Identity.Allow(id); !d.OK {
				log.Debug("request refused: credential over its rate limit", "credential", what, "path", r.URL.Path, "retry_after", d.RetryAfter)
				tooMany(w, d.RetryAfter, fmt.Sprintf("too many requests with this %s (limit %s per identity)", what, lim.Identity.Rate()))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// tooMany writes the 429 answer.
func tooMany(w http.ResponseWriter, retry time.Duration, msg string) {
	secs := int64(math.Ceil(max(retry, time.Second).Seconds()))
	w.Header().Set("Retry-After", fmt.Sprint(secs))
	httpjson.WriteError(w, http.StatusTooManyRequests, fmt.Sprintf("rate limited: %s; retry in %d s", msg, secs))
}

// credential is the rate-limit key of the credential r carries (a hash,
// never the secret): its verified client certificate, else its bearer token.
func credential(r *http.Request) (key, what string) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		sum := sha256.Sum256(r.TLS.VerifiedChains[0][0].Raw)
		return "cert:" + hex.EncodeToString(sum[:12]), "client certificate"
	}
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		sum := sha256.Sum256([]byte(strings.TrimSpace(h[7:])))
		return "bearer:" + hex.EncodeToString(sum[:12]), "token"
	}
	return "", ""
}

// recoverPanics answers a panicking handler 500 JSON and logs the panic
// with its stack. http.ErrAbortHandler keeps its meaning (abort quietly).
func recoverPanics(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic serving a request", "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				httpjson.WriteError(w, http.StatusInternalServerError, "internal error (logged by the master)")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// canonicalPaths refuses 400 a path the mux would redirect ("..", ".",
// empty segments) or that holds a NUL.
func canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if r.Method != http.MethodConnect && !canonical(p) {
			httpjson.WriteError(w, http.StatusBadRequest, fmt.Sprintf("path %q is not canonical (no \".\", \"..\" or empty segments)", p))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// jsonFallbacks serves mux's routes and turns its plain-text 404 and 405
// answers into JSON errors (405 keeps the Allow header).
func jsonFallbacks(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			httpjson.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
		default:
			httpjson.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such route: %s %s", r.Method, r.URL.Path))
		}
	})
}

func canonical(p string) bool {
	if p == "" || p[0] != '/' || strings.ContainsRune(p, 0) {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// statusRecorder captures the answer of the mux's fallback handlers.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(p), nil
}
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
