package master

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/opauth"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// TestYankThroughTheMaster: the real master over TLS: YankVersion (operator
// token) makes /api/binaries/latest skip the version and /api/binaries mark
// it; the yank survives a restart on the same data dir; without the token
// the ReleaseService refuses; unyank restores latest.
func TestYankThroughTheMaster(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", []byte("one"))
	writeBinary(t, dir, "storage-server-1.1.0-linux-x86_64", []byte("one-one"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	latest := func(m *testMaster) string {
		var info struct{ Version string }
		do(t, "GET", m.url+"/api/binaries/latest/linux/x86_64", "").json(t, &info)
		return info.Version
	}
	rel := func(m *testMaster) gridv1.ReleaseServiceClient {
		creds, err := opauth.Load(data)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := creds.Dial(m.grpc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return gridv1.NewReleaseServiceClient(conn)
	}

	m := startMaster(t, dir, data, nil)
	if v := latest(m); v != "1.1.0" {
		t.Fatalf("latest = %s, want 1.1.0", v)
	}
	if _, err := rel(m).YankVersion(ctx, &gridv1.YankVersionRequest{Version: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	if v := latest(m); v != "1.0.0" {
		t.Fatalf("latest after yanking 1.1.0 = %s, want 1.0.0", v)
	}
	var list []map[string]any
	do(t, "GET", m.url+"/api/binaries", "").json(t, &list)
	for _, b := range list {
		if b["version"] == "1.1.0" && b["yanked"] != true {
			t.Errorf("/api/binaries 1.1.0 = %v, want yanked true", b)
		}
	}
	// Without the operator token: refused.
	creds, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	creds.Token = ""
	if conn, err := creds.Dial(m.grpc); err == nil {
		_, err = gridv1.NewReleaseServiceClient(conn).UnyankVersion(ctx, &gridv1.UnyankVersionRequest{Version: "1.1.0"})
		if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
			t.Errorf("UnyankVersion without the token = %v, want UNAUTHENTICATED", err)
		}
		conn.Close()
	}
	m.stop()

	m = startMaster(t, dir, data, nil)
	if v := latest(m); v != "1.0.0" {
		t.Fatalf("latest after a restart = %s, want 1.0.0 (the yank persists)", v)
	}
	if _, err := rel(m).UnyankVersion(ctx, &gridv1.UnyankVersionRequest{Version: "1.1.0"}); err != nil {
		t.Fatal(err)
	}
	if v := latest(m); v != "1.1.0" {
		t.Fatalf("latest after unyank = %s, want 1.1.0", v)
	}
}
