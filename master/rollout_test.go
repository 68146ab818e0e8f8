package master_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// TestRolloutServiceIsOperatorOnly: over real TLS, an agent's client
// certificate gets PERMISSION_DENIED from every RolloutService method; the
// operator gets an INVALID_ARGUMENT naming the platform a version is not
// published for, and an empty list.
func TestRolloutServiceIsOperatorOnly(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var console testutil.SyncBuffer
	addrs, stop := runMaster(t, data, &console)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op := operatorClient(t, data, addrs.GRPC)
	tok := joinToken(t, ctx, op, 1)
	a1, err := enrollAgentAs(t, ctx, addrs.GRPC, tok, "a1", "host-one")
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.register(ctx); err != nil {
		t.Fatal(err)
	}
	agent := gridv1.NewRolloutServiceClient(a1.conn)
	start := &gridv1.StartRolloutRequest{Artifact: "storage-server", Version: "9.9.9", SoakMs: 1000}
	for name, call := range map[string]func() error{
		"start": func() error { _, err := agent.StartRollout(ctx, start); return err },
		"list":  func() error { _, err := agent.ListRollouts(ctx, &gridv1.ListRolloutsRequest{}); return err },
		"abort": func() error { _, err := agent.AbortRollout(ctx, &gridv1.RolloutRequest{Id: "ro-x"}); return err },
	} {
		if c := status.Code(call()); c != codes.PermissionDenied {
			t.Errorf("agent %s: %s, want PermissionDenied", name, c)
		}
	}
	creds, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ro := gridv1.NewRolloutServiceClient(conn)
	_, err = ro.StartRollout(ctx, start)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "linux/x86_64") {
		t.Fatalf("unpublished version: %v", err)
	}
	bad := &gridv1.StartRolloutRequest{Artifact: "storage-server", Version: "1.0.0", SoakMs: 1 << 62}
	if _, err := ro.StartRollout(ctx, bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("huge soak: %v", err)
	}
	if l, err := ro.ListRollouts(ctx, &gridv1.ListRolloutsRequest{}); err != nil || len(l.GetRollouts()) != 0 {
		t.Fatalf("list: %v %v", l, err)
	}
	if _, err := ro.GetRollout(ctx, &gridv1.RolloutRequest{Id: "ro-nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get: %v", err)
	}
}
