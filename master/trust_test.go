package master_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// runMaster runs the real master on data until the returned stop is called.
func runMaster(t *testing.T, data string, console *testutil.SyncBuffer) (master.Addrs, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- master.Run(ctx, master.Options{
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: filepath.Join(filepath.Dir(data), "bin"), DataDir: data,
			ShutdownTimeout: 5 * time.Second, Console: console, Ready: func(a master.Addrs) { ready <- a },
		})
	}()
	var addrs master.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("master.Run returned before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("master.Run = %v", err)
		}
	}
	t.Cleanup(stop)
	return addrs, stop
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Issue 12 at the master's composition root: gRPC is TLS only, the operator
// token is made once (0600) and announced, the fleet routes need it while the
// binary routes stay public, and a restart keeps the CA, the token and the
// identities of enrolled agents.
func TestTrustAtStart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var console testutil.SyncBuffer
	addrs, stop := runMaster(t, data, &console)

	tokenPath := filepath.Join(data, "admin.token")
	fi, err := os.Stat(tokenPath)
	if err != nil {
		t.Fatalf("operator token file: %v", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", tokenPath, fi.Mode().Perm())
	}
	if out := console.String(); !strings.Contains(out, "Operator token created: ") || !strings.Contains(out, "admin.token") || !strings.Contains(out, "CA fingerprint") {
		t.Errorf("start-up lines do not say where the operator token is:\n%s", out)
	}
	creds, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}

	// Plaintext gRPC gets nothing, not even the health service.
	plain, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(plain).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext health check = %v, want UNAVAILABLE", err)
	}

	// HTTP: fleet routes need the token; binary routes do not.
	base := "http://" + addrs.HTTP
	for _, p := range []string{"/api/agents", "/api/agents/x", "/api/nodes", "/api/cluster", "/api/events"} {
		if code := get(t, base+p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token = %d, want 401", p, code)
		}
	}
	if code := get(t, base+"/api/agents", creds.Token); code != http.StatusOK {
		t.Errorf("GET /api/agents with the token = %d, want 200", code)
	}
	if code := get(t, base+"/api/binaries", ""); code != http.StatusOK {
		t.Errorf("GET /api/binaries without the token = %d, want 200 (public)", code)
	}

	// Enroll an agent, then restart the master on the same data dir.
	op, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	jt, err := gridv1.NewGridMasterClient(op).CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jointoken.Parse(jt.GetToken())
	key, _ := mtls.NewKey()
	res, err := enroll.Enroll(ctx, enroll.Request{Addr: addrs.GRPC, Token: tok, AgentID: "a1", Hostname: "h1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	stop()

	var console2 testutil.SyncBuffer
	addrs2, _ := runMaster(t, data, &console2)
	if out := console2.String(); strings.Contains(out, "Operator token created") {
		t.Errorf("the restarted master made a new operator token:\n%s", out)
	}
	creds2, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if creds2.Token != creds.Token {
		t.Error("the operator token changed across a restart")
	}
	conn, err := grpc.NewClient(addrs2.GRPC, grpc.WithTransportCredentials(credentials.NewTLS(res.TLSConfig(key))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gridv1.NewGridMasterClient(conn).RegisterAgent(ctx, &gridv1.RegisterAgentRequest{
		AgentId: "a1", Hostname: "h1", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 1,
	}); err != nil {
		t.Fatalf("the enrolled agent after a master restart: %v", err)
	}
	// The used single-use token stays used.
	key2, _ := mtls.NewKey()
	if _, err := enroll.Enroll(ctx, enroll.Request{Addr: addrs2.GRPC, Token: tok, AgentID: "a2", Hostname: "h2", Key: key2}); err == nil {
		t.Fatal("a used single-use token enrolled again after a restart")
	}
}
