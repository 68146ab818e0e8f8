package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/testutil"
)

func open(t *testing.T, dir string, mod ...func(*Options)) *PKI {
	t.Helper()
	o := Options{Dir: dir, Hostname: "master-1", Logger: testutil.Logger(t, slog.LevelDebug),
		Addrs: func() ([]net.IP, error) { return []net.IP{net.ParseIP("10.1.2.3")}, nil }}
	for _, m := range mod {
		m(&o)
	}
	p, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// issue returns a client certificate for agent id from p.
func issue(t *testing.T, p *PKI, id string) *tls.Certificate {
	t.Helper()
	key := newKey(t)
	der, err := p.IssueClient(csrFor(t, key, nil), id, 0)
	if err != nil {
		t.Fatalf("IssueClient(%s): %v", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestOpenCreatesCAAndServerFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	p := open(t, dir)
	for _, f := range []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, TicketKeysFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if runtime.GOOS != "windows" && (f == CAKeyFile || f == ServerKeyFile || f == TicketKeysFile) && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(dir); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Errorf("tls dir mode = %v, want 0700", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 {
		t.Errorf("tls dir holds %d entries, want the 5 files (no temp files left)", len(entries))
	}
	ca := p.CA()
	if !ca.IsCA || ca.PublicKeyAlgorithm != x509.ECDSA || ca.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("CA: IsCA=%v alg=%v, want an ECDSA P-256 CA", ca.IsCA, ca.PublicKeyAlgorithm)
	}
	if v := ca.NotAfter.Sub(ca.NotBefore); v < CAValidity || v > CAValidity+time.Hour {
		t.Errorf("CA validity = %s, want 10 years", v)
	}
	fp := p.Fingerprint()
	if len(fp) != 64 || fp != Fingerprint(ca) {
		t.Errorf("Fingerprint = %q, want 64 lowercase hex", fp)
	}
	pemCA, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if !bytes.Equal(pemCA, p.CAPEM()) {
		t.Error("CAPEM differs from ca.crt")
	}
	if ca.SerialNumber.BitLen() < 127 {
		t.Errorf("CA serial has %d bits, want 128 random bits", ca.SerialNumber.BitLen())
	}
}

func TestOpenTightensAnExistingLooseDir(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	dir := filepath.Join(t.TempDir(), "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	open(t, dir)
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("tls dir mode = %v, want 0700", fi.Mode().Perm())
	}
}

func TestReopenKeepsCAAndServerCertificate(t *testing.T) {
	dir := t.TempDir()
	p1 := open(t, dir)
	caBefore, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	srvBefore, _ := os.ReadFile(filepath.Join(dir, ServerCertFile))
	p2 := open(t, dir)
	if p2.Fingerprint() != p1.Fingerprint() {
		t.Fatalf("reopen changed the CA fingerprint %s -> %s", p1.Fingerprint(), p2.Fingerprint())
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	srvAfter, _ := os.ReadFile(filepath.Join(dir, ServerCertFile))
	if !bytes.Equal(caBefore, caAfter) || !bytes.Equal(srvBefore, srvAfter) {
		t.Fatal("reopen rewrote ca.crt or server.crt though nothing changed")
	}
	// A certificate issued before the restart still verifies after it.
	cert := issue(t, p1, "agent-1")
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: p2.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("a certificate issued before the restart does not verify after it: %v", err)
	}
}

func TestServerSANs(t *testing.T) {
	p := open(t, t.TempDir(), func(o *Options) {
		o.Hostname = "Master-1"
		o.AdvertiseNames = []string{"grid.example.com", "203.0.113.7", "2001:db8::7"}
		o.Addrs = func() ([]net.IP, error) {
			return []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("127.0.0.2"), net.ParseIP("fe80::1"),
				net.ParseIP("192.168.1.5"), net.ParseIP("2001:db8::1"), net.ParseIP("10.1.2.3")}, nil
		}
	})
	leaf := p.ServerCertificate().Leaf
	for _, want := range []string{"master-1", "localhost", "grid.example.com"} {
		if !slices.Contains(leaf.DNSNames, want) {
			t.Errorf("server DNS names %v lack %s", leaf.DNSNames, want)
		}
	}
	ips := ipStrings(leaf.IPAddresses)
	for _, want := range []string{"127.0.0.1", "::1", "10.1.2.3", "192.168.1.5", "2001:db8::1", "203.0.113.7", "2001:db8::7"} {
		if !slices.Contains(ips, want) {
			t.Errorf("server IPs %v lack %s", ips, want)
		}
	}
	for _, not := range []string{"127.0.0.2", "fe80::1"} {
		if slices.Contains(ips, not) {
			t.Errorf("server IPs %v contain %s (loopback other than 127.0.0.1, or link-local)", ips, not)
		}
	}
	if len(ips) != 7 {
		t.Errorf("server IPs %v: want 7 without duplicates", ips)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
		t.Errorf("server certificate usages %v IsCA=%v, want server auth only", leaf.ExtKeyUsage, leaf.IsCA)
	}
}

func TestServerSANsIncludeEveryRealInterfaceAddress(t *testing.T) {
	p := open(t, t.TempDir(), func(o *Options) { o.Addrs = nil })
	addrs, err := interfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	ips := ipStrings(p.ServerCertificate().Leaf.IPAddresses)
	for _, ip := range addrs {
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		if !slices.Contains(ips, ip.String()) {
			t.Errorf("server IPs %v lack interface address %s", ips, ip)
		}
	}
}

func TestServerCertificateRenewal(t *testing.T) {
	dir := t.TempDir()
	clock := testutil.NewClock(time.Now())
	withClock := func(o *Options) { o.Now = clock.Now }
	p := open(t, dir, withClock)
	fp, serial := p.Fingerprint(), p.ServerCertificate().Leaf.SerialNumber

	same := func(what string, want bool, mod ...func(*Options)) {
		t.Helper()
		p2 := open(t, dir, append([]func(*Options){withClock}, mod...)...)
		if p2.Fingerprint() != fp {
			t.Fatalf("%s: the CA changed", what)
		}
		got := p2.ServerCertificate().Leaf.SerialNumber
		if (got.Cmp(serial) == 0) != want {
			t.Fatalf("%s: server certificate kept = %v, want %v", what, got.Cmp(serial) == 0, want)
		}
		serial = got
	}
	clock.Advance(200 * 24 * time.Hour)
	same("200 days later", true)
	clock.Advance(140 * 24 * time.Hour) // 340 days: expires within 30
	same("340 days later", false)
	same("right after renewal", true)
	same("new advertise name", false, func(o *Options) { o.AdvertiseNames = []string{"grid.example.com"} })
	same("new interface address", false, func(o *Options) {
		o.AdvertiseNames = []string{"grid.example.com"}
		o.Addrs = func() ([]net.IP, error) { return []net.IP{net.ParseIP("10.9.9.9")}, nil }
	})
	// A key that does not match its certificate (a crash between the
	// two writes) is regenerated.
	if err := writeKey(filepath.Join(dir, ServerKeyFile), newKey(t)); err != nil {
		t.Fatal(err)
	}
	same("mismatched key", false, func(o *Options) {
		o.AdvertiseNames = []string{"grid.example.com"}
		o.Addrs = func() ([]net.IP, error) { return []net.IP{net.ParseIP("10.9.9.9")}, nil }
	})
}

func TestCANeverRegenerated(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	caPEM, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir, Hostname: "m"}); err == nil {
		t.Fatal("Open with ca.crt but no ca.key succeeded")
	}
	// A key of another CA: refused too.
	if err := writeKey(filepath.Join(dir, CAKeyFile), newKey(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir, Hostname: "m"}); err == nil {
		t.Fatal("Open with a ca.key of another CA succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if !bytes.Equal(caPEM, after) {
		t.Fatal("ca.crt was replaced")
	}
}

func TestCrashBeforeCACertMakesANewCA(t *testing.T) {
	// ca.key is written before ca.crt; a key alone is a CA nobody saw.
	dir := t.TempDir()
	if err := writeKey(filepath.Join(dir, CAKeyFile), newKey(t)); err != nil {
		t.Fatal(err)
	}
	p := open(t, dir)
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil || !samePublicKey(p.CA().PublicKey, key.Public()) {
		t.Fatalf("after a crash before ca.crt: CA and ca.key do not match (%v)", err)
	}
}

// handshake serves one TLS connection with cfg and returns the server's
// view of it (or its handshake error) and the client's error.
func handshake(t *testing.T, srv *tls.Config, dial func(addr string) (net.Conn, error)) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := c.(*tls.Conn)
		if err := tc.HandshakeContext(context.Background()); err != nil {
			done <- result{err: err}
			return
		}
		// Read the client's byte: in TLS 1.3 the client learns that the
		// server refused its certificate only when it reads.
		var b [1]byte
		if _, err := io.ReadFull(tc, b[:]); err != nil {
			done <- result{st: tc.ConnectionState(), err: err}
			return
		}
		_, _ = tc.Write(b[:])
		done <- result{st: tc.ConnectionState()}
	}()
	var cerr error
	c, err := dial(ln.Addr().String())
	if err != nil {
		cerr = err
	} else {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			cerr = err
		} else if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			cerr = err
		}
		c.Close()
	}
	r := <-done
	return r.st, r.err, cerr
}

func tlsDial(cfg *tls.Config) func(string) (net.Conn, error) {
	return func(addr string) (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	}
}

func TestMutualTLS(t *testing.T) {
	p := open(t, t.TempDir())
	other := open(t, t.TempDir())
	agent := issue(t, p, "agent-7")
	stranger := issue(t, other, "agent-7")

	t.Run("issued certificate identifies its agent", func(t *testing.T) {
		for _, name := range []string{"localhost", "127.0.0.1", "master-1", "10.1.2.3"} {
			cfg := ClientTLSConfig(p.Roots(), agent)
			cfg.ServerName = name
			st, serr, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
			if serr != nil || cerr != nil {
				t.Fatalf("server name %s: server %v, client %v", name, serr, cerr)
			}
			if st.Version != tls.VersionTLS13 || len(st.VerifiedChains) == 0 {
				t.Fatalf("version %x, %d verified chains; want TLS 1.3 and a verified chain", st.Version, len(st.VerifiedChains))
			}
			id, err := AgentIDFromCert(st.VerifiedChains[0][0])
			if err != nil || id != "agent-7" {
				t.Fatalf("AgentIDFromCert = %q, %v; want agent-7", id, err)
			}
		}
	})
	t.Run("no certificate is anonymous", func(t *testing.T) {
		cfg := ClientTLSConfig(p.Roots(), nil)
		cfg.ServerName = "localhost"
		st, serr, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if len(st.PeerCertificates) != 0 || len(st.VerifiedChains) != 0 {
			t.Fatal("a client without certificate has peer certificates")
		}
	})
	t.Run("certificate from another CA refused", func(t *testing.T) {
		cfg := ClientTLSConfig(p.Roots(), stranger)
		cfg.ServerName = "localhost"
		_, serr, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
		if serr == nil || cerr == nil {
			t.Fatalf("server %v, client %v; want both to fail", serr, cerr)
		}
	})
	t.Run("server certificate as client refused", func(t *testing.T) {
		cfg := ClientTLSConfig(p.Roots(), p.ServerCertificate())
		cfg.ServerName = "localhost"
		_, serr, _ := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
		if serr == nil {
			t.Fatal("the server accepted its own server certificate as a client certificate")
		}
	})
	t.Run("client pinning another CA refuses the server", func(t *testing.T) {
		cfg := ClientTLSConfig(other.Roots(), stranger)
		cfg.ServerName = "localhost"
		_, _, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
		var uerr x509.UnknownAuthorityError
		if !errors.As(cerr, &uerr) {
			t.Fatalf("client error = %v, want unknown authority", cerr)
		}
	})
	t.Run("no roots trusts nothing", func(t *testing.T) {
		cfg := ClientTLSConfig(nil, nil)
		cfg.ServerName = "localhost"
		if _, _, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg)); cerr == nil {
			t.Fatal("a client with no roots accepted the server")
		}
	})
	t.Run("wrong server name refused", func(t *testing.T) {
		cfg := ClientTLSConfig(p.Roots(), agent)
		cfg.ServerName = "evil.example.com"
		if _, _, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg)); cerr == nil {
			t.Fatal("a client accepted a server certificate for another name")
		}
	})
	t.Run("plaintext refused", func(t *testing.T) {
		var reply []byte
		_, serr, _ := handshake(t, p.ServerTLSConfig(), func(addr string) (net.Conn, error) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			_, _ = c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			reply, _ = io.ReadAll(c)
			return c, nil
		})
		if serr == nil {
			t.Fatal("the server accepted a plaintext HTTP/2 preface")
		}
		if bytes.Contains(reply, []byte("HTTP")) {
			t.Fatalf("the server answered plaintext: %q", reply)
		}
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cfg := ClientTLSConfig(p.Roots(), agent)
		cfg.ServerName = "localhost"
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if _, serr, _ := handshake(t, p.ServerTLSConfig(), tlsDial(cfg)); serr == nil {
			t.Fatal("the server accepted TLS 1.2")
		}
	})
	t.Run("expired client certificate refused", func(t *testing.T) {
		clock := testutil.NewClock(time.Now().Add(-48 * time.Hour))
		dir := t.TempDir()
		past := open(t, dir, func(o *Options) { o.Now = clock.Now })
		key := newKey(t)
		der, err := past.IssueClient(csrFor(t, key, nil), "agent-old", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		now := open(t, dir)
		cfg := ClientTLSConfig(now.Roots(), &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
		cfg.ServerName = "localhost"
		if _, serr, _ := handshake(t, now.ServerTLSConfig(), tlsDial(cfg)); serr == nil {
			t.Fatal("the server accepted an expired client certificate")
		}
	})
}

func TestSessionResumption(t *testing.T) {
	p := open(t, t.TempDir())
	cfg := ClientTLSConfig(p.Roots(), issue(t, p, "agent-1"))
	cfg.ServerName = "localhost"
	srv := p.ServerTLSConfig()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	var resumed bool
	for range 2 {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The session ticket arrives after the handshake: read a byte back.
		_, _ = c.Write([]byte{1})
		_, _ = io.ReadFull(c, make([]byte, 1))
		resumed = c.ConnectionState().DidResume
		c.Close()
	}
	if !resumed {
		t.Fatal("the second connection did not resume the TLS session")
	}
}

func TestIssueClient(t *testing.T) {
	clock := testutil.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	p := open(t, t.TempDir(), func(o *Options) { o.Now = clock.Now })
	key := newKey(t)
	// A CSR asking for more than a key: names, a CA bit, server auth.
	greedy := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "admin"},
		DNSNames:    []string{"master-1", "localhost"},
		URIs:        []*url.URL{AgentURI("someone-else")},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := p.IssueClient(csrFor(t, key, greedy), "agent-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := AgentIDFromCert(c); err != nil || id != "agent-1" {
		t.Fatalf("AgentIDFromCert = %q, %v", id, err)
	}
	if len(c.DNSNames) != 0 || len(c.IPAddresses) != 0 || len(c.URIs) != 1 || c.URIs[0].String() != "sutra://agent/agent-1" || c.Subject.CommonName != "agent-1" || c.IsCA {
		t.Fatalf("issued certificate names dns=%v ips=%v uris=%v cn=%q ca=%v; want only sutra://agent/agent-1",
			c.DNSNames, c.IPAddresses, c.URIs, c.Subject.CommonName, c.IsCA)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("ExtKeyUsage = %v, want client auth only", c.ExtKeyUsage)
	}
	if got := c.NotAfter.Sub(clock.Now()); got != DefaultClientLifetime {
		t.Fatalf("lifetime = %s, want %s", got, DefaultClientLifetime)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("issued certificate is not for the CSR's key")
	}
	if c.SerialNumber.BitLen() < 127 {
		t.Fatalf("serial has %d bits, want 128 random bits", c.SerialNumber.BitLen())
	}
	other, _ := p.IssueClient(csrFor(t, key, nil), "agent-1", time.Hour)
	oc, _ := x509.ParseCertificate(other)
	if oc.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Fatal("two certificates share a serial")
	}
	if got := oc.NotAfter.Sub(clock.Now()); got != time.Hour {
		t.Fatalf("lifetime = %s, want 1h", got)
	}
	// Ed25519 and RSA 2048 keys are accepted.
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := p.IssueClient(csrFor(t, edKey, nil), "agent-2", 0); err != nil {
		t.Fatalf("Ed25519 CSR: %v", err)
	}
}

func TestIssueClientRefuses(t *testing.T) {
	p := open(t, t.TempDir())
	good := csrFor(t, newKey(t), nil)
	tampered := slices.Clone(good)
	tampered[len(tampered)-5] ^= 0xff // in the signature
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	cases := []struct {
		name     string
		csr      []byte
		id       string
		lifetime time.Duration
		want     error
	}{
		{"empty CSR", nil, "a", 0, ErrBadCSR},
		{"garbage CSR", []byte("not a csr"), "a", 0, ErrBadCSR},
		{"huge CSR", make([]byte, 1<<20), "a", 0, ErrBadCSR},
		{"bad signature", tampered, "a", 0, ErrBadCSR},
		{"RSA 1024", csrFor(t, rsa1024, nil), "a", 0, ErrBadCSR},
		{"P-224", csrFor(t, p224, nil), "a", 0, ErrBadCSR},
		{"bad agent id", good, "../etc", 0, nil},
		{"empty agent id", good, "", 0, nil},
		{"lifetime too short", good, "a", time.Second, nil},
		{"lifetime too long", good, "a", 2 * MaxClientLifetime, nil},
		{"negative lifetime", good, "a", -time.Hour, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			der, err := p.IssueClient(c.csr, c.id, c.lifetime)
			if err == nil || der != nil {
				t.Fatalf("IssueClient = %d bytes, %v; want refused", len(der), err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("IssueClient error %v, want %v", err, c.want)
			}
		})
	}
}

func TestAgentIDFromCertRefuses(t *testing.T) {
	p := open(t, t.TempDir())
	if _, err := AgentIDFromCert(p.ServerCertificate().Leaf); !errors.Is(err, ErrNotAgent) {
		t.Errorf("server certificate: %v, want ErrNotAgent", err)
	}
	if _, err := AgentIDFromCert(p.CA()); !errors.Is(err, ErrNotAgent) {
		t.Errorf("CA certificate: %v, want ErrNotAgent", err)
	}
	if _, err := AgentIDFromCert(nil); !errors.Is(err, ErrNotAgent) {
		t.Errorf("nil: %v, want ErrNotAgent", err)
	}
	// Certificates the CA signed but with the identity wrong.
	make := func(cn string, uris ...string) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA(), newKey(t).Public(), p.key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	for name, c := range map[string]*x509.Certificate{
		"no URI":          make("a1"),
		"two URIs":        make("a1", "sutra://agent/a1", "sutra://agent/a2"),
		"other scheme":    make("a1", "https://agent/a1"),
		"other host":      make("a1", "sutra://operator/a1"),
		"CN differs":      make("a2", "sutra://agent/a1"),
		"bad id":          make("-rf", "sutra://agent/-rf"),
		"nested path":     make("a1/b", "sutra://agent/a1/b"),
		"query":           make("a1", "sutra://agent/a1?admin=1"),
		"escaped path":    make("a/1", "sutra://agent/a%2F1"),
		"with user":       make("a1", "sutra://root@agent/a1"),
		"empty id":        make("", "sutra://agent/"),
		"windows device":  make("CON", "sutra://agent/CON"),
		"only the CN set": make("a1", "sutra://agent"),
	} {
		if id, err := AgentIDFromCert(c); !errors.Is(err, ErrNotAgent) {
			t.Errorf("%s: AgentIDFromCert = %q, %v; want ErrNotAgent", name, id, err)
		}
	}
}

func TestOperatorSuppliedCertificates(t *testing.T) {
	// The operator's CA and server certificate: made by another PKI here.
	opDir := t.TempDir()
	op := open(t, opDir)
	files := func(o *Options) {
		o.CertFile = filepath.Join(opDir, ServerCertFile)
		o.KeyFile = filepath.Join(opDir, ServerKeyFile)
		o.CAFile = filepath.Join(opDir, CACertFile)
	}

	t.Run("with the CA key", func(t *testing.T) {
		dir := t.TempDir()
		p := open(t, dir, files, func(o *Options) { o.CAKeyFile = filepath.Join(opDir, CAKeyFile) })
		if p.Fingerprint() != op.Fingerprint() {
			t.Fatal("the pin is not the operator's CA")
		}
		// Only its session ticket keys: state, not trust material.
		if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != TicketKeysFile {
			t.Fatalf("the master wrote %d files though the operator supplied everything", len(entries))
		}
		cfg := ClientTLSConfig(op.Roots(), issue(t, p, "agent-1"))
		cfg.ServerName = "localhost"
		st, serr, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if id, err := AgentIDFromCert(st.VerifiedChains[0][0]); id != "agent-1" {
			t.Fatalf("AgentIDFromCert = %q, %v", id, err)
		}
	})
	t.Run("without the CA key", func(t *testing.T) {
		dir := t.TempDir()
		p := open(t, dir, files)
		if p.Fingerprint() != op.Fingerprint() {
			t.Fatal("the pin is not the operator's CA")
		}
		if _, err := os.Stat(filepath.Join(dir, ServerCertFile)); err == nil {
			t.Fatal("the master wrote its own server certificate")
		}
		// Agents trust the operator's CA and present certificates of the
		// master's own client CA.
		cfg := ClientTLSConfig(op.Roots(), issue(t, p, "agent-1"))
		cfg.ServerName = "localhost"
		st, serr, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if id, _ := AgentIDFromCert(st.VerifiedChains[0][0]); id != "agent-1" {
			t.Fatalf("AgentIDFromCert = %q", id)
		}
		// A certificate issued by the operator's CA is not a client of this master.
		cfg = ClientTLSConfig(op.Roots(), issue(t, op, "agent-1"))
		cfg.ServerName = "localhost"
		if _, serr, _ := handshake(t, p.ServerTLSConfig(), tlsDial(cfg)); serr == nil {
			t.Fatal("a certificate of the operator's CA was accepted as a client without the CA key configured")
		}
	})
	t.Run("mismatches refused", func(t *testing.T) {
		other := t.TempDir()
		open(t, other)
		for name, mod := range map[string]func(*Options){
			"CA key of another CA": func(o *Options) { files(o); o.CAKeyFile = filepath.Join(other, CAKeyFile) },
			"CA file of another CA": func(o *Options) {
				files(o)
				o.CAFile = filepath.Join(other, CACertFile)
			},
			"key of another cert": func(o *Options) { files(o); o.KeyFile = filepath.Join(other, ServerKeyFile) },
		} {
			o := Options{Dir: t.TempDir(), Hostname: "m"}
			mod(&o)
			if _, err := Open(o); err == nil {
				t.Errorf("%s: Open succeeded", name)
			}
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	err := Options{CertFile: "x", AdvertiseNames: []string{"ok.example", "bad name", "-x.example", ""}, CAKeyFile: "k"}.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad options")
	}
	// Every problem at once: the empty dir, the partial file set, the CA key
	// without CA file, three bad names.
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 6 {
		t.Fatalf("Validate reported %d problems, want 6: %v", n, err)
	}
}

func TestClientCertificateIsPEMRoundTrippable(t *testing.T) {
	// The agent will store what IssueClient returns as PEM; make sure the
	// pair loads with tls.X509KeyPair.
	p := open(t, t.TempDir())
	key := newKey(t)
	der, err := p.IssueClient(csrFor(t, key, nil), "agent-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if _, err := tls.X509KeyPair(pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})); err != nil {
		t.Fatal(err)
	}
}

// TestAgentEnrollmentSide walks what the agent will do, with the helpers it
// can import (internal/mtls): check the master's CA bundle against the pin,
// make a key and a CSR, and connect with the certificate the master issued.
func TestAgentEnrollmentSide(t *testing.T) {
	p := open(t, t.TempDir())
	impostor := open(t, t.TempDir())

	// A second master (or a man in the middle) serving its own bundle is
	// refused before anything secret is sent, naming both fingerprints.
	_, _, err := mtls.PinnedRoots(impostor.CAPEM(), p.Fingerprint())
	if !errors.Is(err, mtls.ErrPinMismatch) || !strings.Contains(err.Error(), p.Fingerprint()) || !strings.Contains(err.Error(), impostor.Fingerprint()) {
		t.Fatalf("PinnedRoots(impostor bundle) = %v, want ErrPinMismatch naming both fingerprints", err)
	}
	roots, _, err := mtls.PinnedRoots(p.CAPEM(), p.Fingerprint())
	if err != nil {
		t.Fatalf("PinnedRoots(master bundle) = %v", err)
	}
	// The pinned pool does not trust the impostor's server.
	cfg := mtls.ClientConfig(roots, nil)
	cfg.ServerName = "localhost"
	if _, _, cerr := handshake(t, impostor.ServerTLSConfig(), tlsDial(cfg)); cerr == nil {
		t.Fatal("the pinned roots accepted the impostor's server")
	}

	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := mtls.NewCSR(key, "agent-9")
	if err != nil {
		t.Fatal(err)
	}
	der, err := p.IssueClient(csr, "agent-9", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg = mtls.ClientConfig(roots, &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	cfg.ServerName = "localhost"
	st, serr, cerr := handshake(t, p.ServerTLSConfig(), tlsDial(cfg))
	if serr != nil || cerr != nil {
		t.Fatalf("server %v, client %v", serr, cerr)
	}
	if id, err := AgentIDFromCert(st.VerifiedChains[0][0]); err != nil || id != "agent-9" {
		t.Fatalf("AgentIDFromCert = %q, %v; want agent-9", id, err)
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := mtls.NewKey()
	good, _ := mtls.NewCSR(key, "a")
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := ParseCSR(der)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("ParseCSR error %v does not wrap ErrBadCSR", err)
			}
			return
		}
		if checkKey(pub) != nil {
			t.Fatal("ParseCSR accepted a weak key")
		}
	})
}
