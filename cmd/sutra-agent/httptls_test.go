package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/master"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Issue 12, --http-tls with --private-downloads on a real master: the real
// agent (`sutra-agent fetch`) with an https:// master_binary_url downloads
// with the identity it got at enrollment ({agent_data_dir}/tls: the pinned
// CA verifies the master, its certificate opens the private routes); with an
// http:// URL its error says the master serves HTTPS and to use https://.
func TestAgentDownloadsOverHTTPS(t *testing.T) {
	root := t.TempDir()
	plat, arch, err := platform.Current()
	if err != nil {
		t.Skip(err)
	}
	data := bytes.Repeat([]byte("storage-server over https "), 1000)
	bin := filepath.Join(root, "bin")
	name := "storage-server-1.0.0-" + plat + "-" + arch
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour) // settled: registered at start-up
	if err := os.Chtimes(filepath.Join(bin, name), old, old); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- master.Run(ctx, master.Options{
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: bin, DataDir: filepath.Join(root, "data"),
			ShutdownTimeout: 5 * time.Second, HTTPTLS: true, PrivateDownloads: true,
			Ready: func(a master.Addrs) { ready <- a },
		})
	}()
	var addrs master.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("master.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	t.Cleanup(func() { cancel(); <-done })

	// Enroll as the agent does and keep its identity in {agent_data_dir}/tls.
	creds, err := opauth.Load(filepath.Join(root, "data"))
	if err != nil {
		t.Fatal(err)
	}
	op, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	jt, err := gridv1.NewGridMasterClient(op).CreateJoinToken(rctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jointoken.Parse(jt.GetToken())
	key, _ := mtls.NewKey()
	res, err := enroll.Enroll(rctx, enroll.Request{Addr: addrs.GRPC, Token: tok, AgentID: "a1", Hostname: "h1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	agentData := filepath.Join(root, "agent")
	tlsDir := filepath.Join(agentData, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	for f, b := range map[string][]byte{
		"agent.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"agent.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.CertChain[0]}),
		"ca.crt":    res.CAPEM,
	} {
		if err := os.WriteFile(filepath.Join(tlsDir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	config := func(url string) string { // a new cache each time: nothing cached answers for the master
		return writeConfig(t, fmt.Sprintf("[agent]\nagent_id = \"a1\"\ncache_dir = %q\nagent_data_dir = %q\n[storage]\nmaster_binary_url = %q\n[logging]\nlevel = \"warn\"\n",
			t.TempDir(), agentData, url))
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"fetch", "--config", config("https://" + addrs.HTTP), "--version", "1.0.0"}, &stdout, &stderr); err != nil {
		t.Fatalf("sutra-agent fetch over https: %v\n%s", err, stderr.String())
	}
	if got, _ := os.ReadFile(strings.TrimSpace(stdout.String())); !bytes.Equal(got, data) {
		t.Fatalf("fetched file %q differs from the published binary", stdout.String())
	}

	stdout.Reset()
	stderr.Reset()
	err = run(context.Background(), []string{"fetch", "--config", config("http://" + addrs.HTTP), "--version", "1.0.0"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--http-tls") || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("fetch with http:// against an https master = %v, want a hint to use https://", err)
	}
}
