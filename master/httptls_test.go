package master_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/pki"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// runMasterOpts runs the real master with o (addresses, dirs and Ready
// filled in) until the test ends.
func runMasterOpts(t *testing.T, root string, console *testutil.SyncBuffer, o master.Options) master.Addrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	o.HTTPAddr, o.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.BinariesDir, o.DataDir = filepath.Join(root, "bin"), filepath.Join(root, "data")
	o.ShutdownTimeout, o.Console = 5*time.Second, console
	o.Ready = func(a master.Addrs) { ready <- a }
	go func() { done <- master.Run(ctx, o) }()
	var addrs master.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("master.Run returned before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("master.Run = %v", err)
		}
	})
	return addrs
}

// enrollAgent enrolls agent id with a fresh join token and stores its
// identity the way the agent does ({tlsDir}/ca.crt, agent.crt, agent.key).
func enrollAgent(t *testing.T, ctx context.Context, creds opauth.Credentials, grpcAddr, id, tlsDir string) tls.Certificate {
	t.Helper()
	op, err := creds.Dial(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	jt, err := gridv1.NewGridMasterClient(op).CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(jt.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := mtls.NewKey()
	res, err := enroll.Enroll(ctx, enroll.Request{Addr: grpcAddr, Token: tok, AgentID: id, Hostname: "h-" + id, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	writeIdentity(t, tlsDir, res.CAPEM, res.CertChain, key)
	return tls.Certificate{Certificate: res.CertChain, PrivateKey: key}
}

func writeIdentity(t *testing.T, dir string, caPEM []byte, chain [][]byte, key *ecdsa.PrivateKey) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for name, data := range map[string][]byte{
		"agent.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"agent.crt": certPEM,
		"ca.crt":    caPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// httpsClient trusts roots and presents cert (nil: none).
func httpsClient(roots *x509.CertPool, cert *tls.Certificate) *http.Client {
	c := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
}

type httpAnswer struct {
	code int
	body string
}

func call(t *testing.T, c *http.Client, method, url, token string) (httpAnswer, error) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"checksum":"` + strings.Repeat("0", 64) + `"}`)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return httpAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, string(b)}, nil
}

const (
	tlsTestVersion = "1.0.0"
	tlsTestPlat    = "linux"
	tlsTestArch    = "x86_64"
)

// setupBinary publishes storage-server 1.0.0 for linux/x86_64 in root/bin.
func setupBinary(t *testing.T, root string) (name string, data []byte) {
	t.Helper()
	name = "storage-server-" + tlsTestVersion + "-" + tlsTestPlat + "-" + tlsTestArch
	data = []byte("#!/bin/sh\necho storage-server over https\n")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	// Settled long ago: registered at start-up, not after the settle time.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(root, "bin", name), old, old); err != nil {
		t.Fatal(err)
	}
	return name, data
}

// Issue 12, --http-tls and --private-downloads: the HTTP port serves HTTPS
// with the master's certificate; an enrolled agent's certificate downloads
// (the real agent client: cmd/sutra-agent's TestAgentDownloadsOverHTTPS); a
// client that does not trust the CA, a certificate from another CA, and
// plain http:// fail; every
// binary route needs an agent certificate or the operator token (401 JSON
// otherwise); an agent the AgentCheck refuses (revoked) gets 403.
func TestHTTPTLSPrivateDownloads(t *testing.T) {
	root := t.TempDir()
	name, _ := setupBinary(t, root)
	var console testutil.SyncBuffer
	addrs := runMasterOpts(t, root, &console, master.Options{
		HTTPTLS: true, PrivateDownloads: true,
		AgentCheck: func(id string) error {
			if id == "revoked" {
				return errors.New("revoked")
			}
			return nil
		},
	})
	if out := console.String(); !strings.Contains(out, "HTTPS: https://127.0.0.1:") || !strings.Contains(out, "HTTPS binary server started on https://") {
		t.Errorf("start-up lines do not say https:\n%s", out)
	}
	creds, err := opauth.Load(filepath.Join(root, "data"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	agentTLS := filepath.Join(root, "agent", "tls")
	agentCert := enrollAgent(t, ctx, creds, addrs.GRPC, "a1", agentTLS)
	revokedCert := enrollAgent(t, ctx, creds, addrs.GRPC, "revoked", filepath.Join(root, "revoked", "tls"))

	base := "https://" + addrs.HTTP
	routes := []struct{ method, path string }{
		{"GET", "/api/binaries"},
		{"GET", "/api/binaries/" + tlsTestVersion + "/" + tlsTestPlat + "/" + tlsTestArch},
		{"POST", "/api/binaries/" + tlsTestVersion + "/" + tlsTestPlat + "/" + tlsTestArch + "/verify"},
		{"GET", "/api/artifacts"},
		{"GET", "/api/artifacts/storage-server"},
		{"GET", "/api/artifacts/storage-server/" + tlsTestVersion + "/" + tlsTestPlat + "/" + tlsTestArch},
		{"POST", "/api/artifacts/storage-server/" + tlsTestVersion + "/" + tlsTestPlat + "/" + tlsTestArch + "/verify"},
		{"GET", "/binaries/" + name},
		{"GET", "/binaries/no-such-file"},
	}
	anon := httpsClient(creds.Roots, nil)
	withCert := httpsClient(creds.Roots, &agentCert)
	withRevoked := httpsClient(creds.Roots, &revokedCert)
	for _, r := range routes {
		a, err := call(t, anon, r.method, base+r.path, "")
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, r.path, err)
		}
		var e struct{ Error string }
		if a.code != http.StatusUnauthorized || json.Unmarshal([]byte(a.body), &e) != nil || !strings.Contains(e.Error, "private") {
			t.Errorf("%s %s without a credential = %d %s, want 401 JSON", r.method, r.path, a.code, a.body)
		}
		if a, _ := call(t, anon, r.method, base+r.path, "wrong-token-wrong-token"); a.code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong token = %d, want 401", r.method, r.path, a.code)
		}
		want := http.StatusOK
		if strings.HasSuffix(r.path, "no-such-file") {
			want = http.StatusNotFound
		}
		if a, err := call(t, withCert, r.method, base+r.path, ""); err != nil || a.code != want {
			t.Errorf("%s %s with an agent certificate = %d %s %v, want %d", r.method, r.path, a.code, a.body, err, want)
		}
		if a, err := call(t, anon, r.method, base+r.path, creds.Token); err != nil || a.code != want {
			t.Errorf("%s %s with the operator token = %d %s %v, want %d", r.method, r.path, a.code, a.body, err, want)
		}
		if a, err := call(t, withRevoked, r.method, base+r.path, ""); err != nil || a.code != http.StatusForbidden {
			t.Errorf("%s %s with a refused (revoked) agent's certificate = %d %v, want 403", r.method, r.path, a.code, err)
		}
	}
	// A real revocation (sutra agents revoke): the agent's certificate stops
	// opening the private routes at once, on its open connection too.
	a2Cert := enrollAgent(t, ctx, creds, addrs.GRPC, "a2", filepath.Join(root, "a2", "tls"))
	withA2 := httpsClient(creds.Roots, &a2Cert)
	if a, err := call(t, withA2, "GET", base+"/binaries/"+name, ""); err != nil || a.code != http.StatusOK {
		t.Fatalf("agent a2 before revocation = %d %v, want 200", a.code, err)
	}
	op, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if _, err := gridv1.NewGridMasterClient(op).RevokeAgent(ctx, &gridv1.RevokeAgentRequest{AgentId: "a2", Reason: "test"}); err != nil {
		t.Fatalf("RevokeAgent: %v", err)
	}
	if a, err := call(t, withA2, "GET", base+"/binaries/"+name, ""); err != nil || a.code != http.StatusForbidden || !strings.Contains(a.body, "a2") {
		t.Errorf("revoked agent a2 = %d %q %v, want 403 naming it", a.code, a.body, err)
	}

	// The fleet routes still want the operator token, not an agent certificate.
	if a, _ := call(t, withCert, "GET", base+"/api/agents", ""); a.code != http.StatusUnauthorized {
		t.Errorf("GET /api/agents with an agent certificate = %d, want 401", a.code)
	}

	// A certificate from another CA fails the handshake.
	other, err := pki.Open(pki.Options{Dir: filepath.Join(root, "other-ca")})
	if err != nil {
		t.Fatal(err)
	}
	okey, _ := mtls.NewKey()
	csr, _ := mtls.NewCSR(okey, "a1")
	oder, err := other.IssueClient(csr, "a1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := httpsClient(creds.Roots, &tls.Certificate{Certificate: [][]byte{oder}, PrivateKey: okey})
	if a, err := call(t, foreign, "GET", base+"/binaries/"+name, ""); err == nil {
		t.Errorf("a certificate from another CA got %d, want a failed handshake", a.code)
	}

	// A client that does not trust the master's CA fails the handshake.
	if _, err := call(t, httpsClient(x509.NewCertPool(), &agentCert), "GET", base+"/api/binaries", ""); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the master's CA: err = %v, want a certificate error", err)
	}
	// Plain http:// to the HTTPS port: net/http's clear 400 (the agent's
	// error then says what to change: cmd/sutra-agent's TestAgentDownloadsOverHTTPS).
	a, err := call(t, &http.Client{Timeout: 10 * time.Second}, "GET", "http://"+addrs.HTTP+"/api/binaries", "")
	if err != nil || a.code != http.StatusBadRequest || !strings.Contains(a.body, "HTTPS") {
		t.Errorf("plain http to the https port = %d %q %v, want 400 naming HTTPS", a.code, a.body, err)
	}
}

// --http-tls alone keeps the binary routes public (over HTTPS).
func TestHTTPTLSPublicDownloads(t *testing.T) {
	root := t.TempDir()
	name, _ := setupBinary(t, root)
	var console testutil.SyncBuffer
	addrs := runMasterOpts(t, root, &console, master.Options{HTTPTLS: true})
	creds, err := opauth.Load(filepath.Join(root, "data"))
	if err != nil {
		t.Fatal(err)
	}
	c := httpsClient(creds.Roots, nil)
	for _, p := range []string{"/api/binaries", "/binaries/" + name} {
		if a, err := call(t, c, "GET", "https://"+addrs.HTTP+p, ""); err != nil || a.code != http.StatusOK {
			t.Errorf("GET %s without a credential = %d %v, want 200", p, a.code, err)
		}
	}
	if a, _ := call(t, c, "GET", "https://"+addrs.HTTP+"/api/agents", ""); a.code != http.StatusUnauthorized {
		t.Errorf("GET /api/agents without the token = %d, want 401", a.code)
	}
}

// --private-downloads without --http-tls is refused at start: agents could
// not present their certificates over plain HTTP.
func TestPrivateDownloadsNeedHTTPTLS(t *testing.T) {
	err := master.Run(context.Background(), master.Options{PrivateDownloads: true, DataDir: t.TempDir(), BinariesDir: t.TempDir()})
	if !errors.Is(err, master.ErrPrivateDownloadsNeedTLS) {
		t.Fatalf("Run = %v, want ErrPrivateDownloadsNeedTLS", err)
	}
}
