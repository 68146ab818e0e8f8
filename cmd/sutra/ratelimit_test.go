package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/ratelimit"
)

// Issue 12: a CLI call the master refuses with RESOURCE_EXHAUSTED and
// RetryInfo (its rate limits, master/ratelimit's interceptor over real TLS)
// exits 4 with one line saying when to retry.
func TestCLIRateLimited(t *testing.T) {
	m := startMaster(t)
	ca, err := pki.Open(pki.Options{Dir: filepath.Join(m.dataDir, "tls")})
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(ratelimit.Config{Identity: ratelimit.Rate{N: 1, Per: time.Hour, Burst: 1}, Address: ratelimit.Rate{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	rl := &ratelimit.GRPC{Limits: lim, Identity: func(context.Context, string) string { return "operator" }}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerTLSConfig())), grpc.ChainUnaryInterceptor(rl.Before(), rl.After()))
	grpcapi.New(m.f, nil).Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	env := map[string]string{"SUTRA_MASTER": lis.Addr().String(), "SUTRA_DATA_DIR": m.dataDir}
	sutraEnv(t, env, "status").want(t, exitOK)
	r := sutraEnv(t, env, "status")
	if r.code != exitUnavailable || !strings.Contains(r.stderr, "is rate limiting this client: retry in 1h0m0s") {
		t.Fatalf("sutra status over the limit: exit %d stderr %q; want exit %d saying when to retry", r.code, r.stderr, exitUnavailable)
	}
	if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Fatalf("error is not one line: %q", r.stderr)
	}
}
