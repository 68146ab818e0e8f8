package fetch

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/mtls"
)

// tlsCA is a small CA standing in for the master's (the agent may not
// import master/pki).
type tlsCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTLSCA(t *testing.T) *tlsCA {
	t.Helper()
	key, _ := mtls.NewKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &tlsCA{cert: cert, key: key}
}

func (ca *tlsCA) issue(t *testing.T, serial int64, server bool) (der []byte, key *ecdsa.PrivateKey) {
	t.Helper()
	key, _ = mtls.NewKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "a1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = append(tmpl.URIs, mtls.AgentURI("a1"))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// writeAgentFiles writes ca.crt and a client certificate (serial) as
// enrollment or a renewal does; the files' times move on so that a change
// shows even within the file system's time resolution.
func (ca *tlsCA) writeAgentFiles(t *testing.T, dir string, serial int64, at time.Time) {
	t.Helper()
	ca.writeFiles(t, dir, serial, at, true)
}

// renew replaces agent.key and agent.crt only, as a renewal does.
func (ca *tlsCA) renew(t *testing.T, dir string, serial int64, at time.Time) {
	t.Helper()
	ca.writeFiles(t, dir, serial, at, false)
}

func (ca *tlsCA) writeFiles(t *testing.T, dir string, serial int64, at time.Time, withCA bool) {
	t.Helper()
	der, key := ca.issue(t, serial, false)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		tlsKeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		tlsCertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		tlsCAFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
	} {
		if name == tlsCAFile && !withCA {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

// httpsMaster answers the metadata route over TLS with a certificate of ca,
// recording the serial of each request's client certificate (0: none).
func httpsMaster(t *testing.T, ca *tlsCA) (*httptest.Server, func() []int64) {
	t.Helper()
	var mu sync.Mutex
	var serials []int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s int64
		if len(r.TLS.PeerCertificates) > 0 {
			s = r.TLS.PeerCertificates[0].SerialNumber.Int64()
		}
		mu.Lock()
		serials = append(serials, s)
		mu.Unlock()
		httpjson.Write(w, http.StatusOK, httpapi.BinaryInfo{Version: "1.0.0", Platform: "linux", Arch: "x86_64",
			Checksum: strings.Repeat("ab", 32), SizeBytes: 10, Path: "storage-server-1.0.0-linux-x86_64"})
	}))
	der, key := ca.issue(t, 2, true)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, func() []int64 { mu.Lock(); defer mu.Unlock(); return append([]int64(nil), serials...) }
}

func tlsFetcher(t *testing.T, base, tlsDir string) *Fetcher {
	t.Helper()
	f, err := New(Options{BaseURL: base, CacheDir: t.TempDir(), TLSDir: tlsDir, Platform: "linux", Arch: "x86_64",
		Attempts: 1, Retries: 1, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// With an https master the agent trusts the CA it pinned at enrollment and
// presents its certificate; after a renewal (new agent.crt) the next request
// presents the new one, not a session resumed with the old one.
func TestHTTPSPresentsTheCurrentCertificate(t *testing.T) {
	ca := newTLSCA(t)
	srv, seen := httpsMaster(t, ca)
	dir := filepath.Join(t.TempDir(), "tls")
	ca.writeAgentFiles(t, dir, 10, time.Now().Add(-time.Minute))
	f := tlsFetcher(t, srv.URL, dir)
	for range 2 {
		if _, err := f.Resolve(t.Context(), "1.0.0"); err != nil {
			t.Fatalf("Resolve over https: %v", err)
		}
	}
	ca.renew(t, dir, 11, time.Now())
	if _, err := f.Resolve(t.Context(), "1.0.0"); err != nil {
		t.Fatalf("Resolve after renewal: %v", err)
	}
	if got := seen(); len(got) != 3 || got[0] != 10 || got[1] != 10 || got[2] != 11 {
		t.Fatalf("client certificate serials seen by the master = %v, want [10 10 11]", got)
	}
}

// The agent trusts only its pinned CA: a master whose certificate another CA
// issued is refused, and the server never sees a request.
func TestHTTPSTrustsOnlyThePinnedCA(t *testing.T) {
	pinned, other := newTLSCA(t), newTLSCA(t)
	srv, seen := httpsMaster(t, other)
	dir := filepath.Join(t.TempDir(), "tls")
	pinned.writeAgentFiles(t, dir, 10, time.Now())
	if _, err := tlsFetcher(t, srv.URL, dir).Resolve(t.Context(), "1.0.0"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Resolve against a master of another CA = %v, want a certificate error", err)
	}
	if got := seen(); len(got) != 0 {
		t.Fatalf("the untrusted server got %d requests", len(got))
	}
	// A ca.crt that holds no certificate is an error naming the file.
	if err := os.WriteFile(filepath.Join(dir, tlsCAFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsFetcher(t, srv.URL, dir).Resolve(t.Context(), "1.0.0"); err == nil || !strings.Contains(err.Error(), tlsCAFile) {
		t.Fatalf("Resolve with a junk ca.crt = %v, want an error naming it", err)
	}
}

// A plain request to an HTTPS port: the error says to use https://.
func TestHTTPToHTTPSPortSaysSo(t *testing.T) {
	ca := newTLSCA(t)
	srv, _ := httpsMaster(t, ca)
	plain := "http://" + strings.TrimPrefix(srv.URL, "https://")
	_, err := tlsFetcher(t, plain, t.TempDir()).Resolve(t.Context(), "1.0.0")
	if err == nil || !strings.Contains(err.Error(), "--http-tls") || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("Resolve with http:// against an HTTPS port = %v, want the https hint", err)
	}
}
