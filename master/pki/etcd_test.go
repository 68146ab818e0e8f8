package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// TestSharedTrustOnEtcd: two masters, each with its own client of a real
// etcd, start at once: they end up with one CA, one operator token (in
// both admin.token files) and one set of session ticket keys, so an agent
// enrolled by one master resumes its TLS session on the other.
func TestSharedTrustOnEtcd(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := context.Background()
	type master struct {
		p   *pki.PKI
		tok string
		err error
	}
	ms := make([]master, 2)
	root := t.TempDir()
	var wg sync.WaitGroup
	for i := range ms {
		st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		dir := filepath.Join(root, string(rune('a'+i)))
		wg.Go(func() {
			m := &ms[i]
			m.p, m.err = pki.OpenContext(ctx, pki.Options{Dir: filepath.Join(dir, "tls"), Hostname: "master-" + string(rune('a'+i)),
				Shared: st, Logger: testutil.Logger(t, slog.LevelInfo), Addrs: func() ([]net.IP, error) { return nil, nil }})
			if m.err == nil {
				m.tok, _, m.err = auth.LoadOrCreateSharedToken(ctx, st, filepath.Join(dir, auth.TokenFile), nil)
			}
		})
	}
	wg.Wait()
	for i, m := range ms {
		if m.err != nil {
			t.Fatalf("master %d: %v", i, m.err)
		}
	}
	a, b := ms[0].p, ms[1].p
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatalf("CA fingerprints %s and %s: want one CA", a.Fingerprint(), b.Fingerprint())
	}
	if ms[0].tok != ms[1].tok {
		t.Fatal("the masters have different operator tokens")
	}
	for _, d := range []string{"a", "b"} {
		if got, err := os.ReadFile(filepath.Join(root, d, auth.TokenFile)); err != nil || string(got) != ms[0].tok+"\n" {
			t.Fatalf("master %s's admin.token does not hold the shared token (%v)", d, err)
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	der, err := a.IssueClient(csr, "agent-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pki.ClientTLSConfig(b.Roots(), &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	cfg.ServerName = "localhost"
	if dial(t, a, cfg) {
		t.Fatal("the first connection resumed")
	}
	if !dial(t, b, cfg) {
		t.Fatal("the agent did not resume on master B the session it made with master A")
	}
}

// dial makes one connection to a server of p and reports whether it resumed.
func dial(t *testing.T, p *pki.PKI, cfg *tls.Config) bool {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.CopyN(c, c, 1)
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}
