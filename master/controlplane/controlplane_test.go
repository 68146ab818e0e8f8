package controlplane

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/store"
)

// Issue 11 item 2: the control plane is built from explicit arguments (a
// data dir, a logger, the servers) and registers on servers it is handed,
// without package master.
func TestOpenRegisterRunClose(t *testing.T) {
	dir := t.TempDir()
	cp, err := Open(context.Background(), dir, nil, Options{MaxWatchers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "grid.db")); err != nil {
		t.Errorf("Open did not create the fleet database in the data dir: %v", err)
	}
	grpcSrv, mux, hs := grpc.NewServer(), http.NewServeMux(), health.NewServer()
	ca, err := pki.Open(pki.Options{Dir: filepath.Join(dir, "tls")})
	if err != nil {
		t.Fatal(err)
	}
	const token = "operator-token-0123456789abcdef"
	policy, err := auth.NewPolicy(token)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Register(grpcSrv, mux, hs, Trust{PKI: ca, Operator: policy}); err != nil {
		t.Fatal(err)
	}

	if _, ok := grpcSrv.GetServiceInfo()[ServiceName]; !ok {
		t.Errorf("gRPC services after Register = %v, want %s", grpcSrv.GetServiceInfo(), ServiceName)
	}
	resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s = %v, %v; want SERVING", ServiceName, resp.GetStatus(), err)
	}
	for _, tt := range []struct {
		path, remote string
		status       int
		body         string
		noToken      bool
	}{
		{"/api/agents", "127.0.0.1:1", 200, "[", false},
		{"/api/cluster", "127.0.0.1:1", 200, "{", false},
		{store.BackupPath, "127.0.0.1:1", 200, "", false},
		{store.BackupPath, "192.0.2.1:1", 403, `"error"`, false},
		// Issue 12: the fleet routes need the operator token.
		{"/api/agents", "127.0.0.1:1", 401, `"error"`, true},
		{"/api/agents/a1", "127.0.0.1:1", 401, `"error"`, true},
		{"/api/nodes", "127.0.0.1:1", 401, `"error"`, true},
		{"/api/cluster", "127.0.0.1:1", 401, `"error"`, true},
		{"/api/events", "127.0.0.1:1", 401, `"error"`, true},
		{store.BackupPath, "127.0.0.1:1", 401, `"error"`, true},
	} {
		req := httptest.NewRequest("GET", tt.path, nil)
		req.RemoteAddr = tt.remote
		if !tt.noToken {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
			t.Errorf("GET %s from %s = %d %.80q, want %d with %q", tt.path, tt.remote, rec.Code, rec.Body.String(), tt.status, tt.body)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending")
	}
	if err := cp.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	// Closed: the database can be opened again (bbolt's file lock is released).
	cp2, err := Open(context.Background(), dir, nil, Options{})
	if err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
	_ = cp2.Close()
}

func TestOpenNeedsDataDir(t *testing.T) {
	if cp, err := Open(context.Background(), "", nil, Options{}); err == nil {
		_ = cp.Close()
		t.Fatal(`Open(data dir "") = nil error, want one`)
	}
}
