package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// testCA is a small CA for a fake master (the agent may not import the
// master's master/pki): a server certificate for 127.0.0.1 and client
// certificates naming agents as the master's do.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, pub any, serial int64, server bool, agentID string) []byte {
	return ca.issueValid(t, pub, serial, server, agentID, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func (ca *testCA) issueValid(t *testing.T, pub any, serial int64, server bool, agentID string, notBefore, notAfter time.Time) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: agentID},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = append(tmpl.URIs, mtls.AgentURI(agentID))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// serverTLS is the fake master's TLS config (client certificates optional).
func (ca *testCA) serverTLS(t *testing.T) *tls.Config {
	key, _ := mtls.NewKey()
	der := ca.issue(t, key.Public(), 2, true, "")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
}

// writeAgent puts an enrolled agent's files in dir.
func (ca *testCA) writeAgent(t *testing.T, dir, agentID string) {
	t.Helper()
	ca.writeAgentValid(t, dir, agentID, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func (ca *testCA) writeAgentValid(t *testing.T, dir, agentID string, notBefore, notAfter time.Time) {
	t.Helper()
	key, _ := mtls.NewKey()
	der := ca.issueValid(t, key.Public(), 3, false, agentID, notBefore, notAfter)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		CAFile:   ca.pem,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// startTLSFakeMaster serves m over TLS with ca's server certificate.
func startTLSFakeMaster(t *testing.T, ca *testCA, m gridv1.GridMasterServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.serverTLS(t))))
	gridv1.RegisterGridMasterServer(srv, m)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// enrollMaster is a fake master that enrolls: it serves its CA bundle and
// issues a certificate for the CSR, recording every Enroll it sees.
type enrollMaster struct {
	fakeMaster
	ca      *testCA
	t       *testing.T
	mu      sync.Mutex
	enrolls []*gridv1.EnrollRequest
}

func (m *enrollMaster) CABundle(context.Context, *gridv1.CABundleRequest) (*gridv1.CABundleResponse, error) {
	return &gridv1.CABundleResponse{CaBundlePem: m.ca.pem}, nil
}

func (m *enrollMaster) Enroll(_ context.Context, r *gridv1.EnrollRequest) (*gridv1.EnrollResponse, error) {
	m.mu.Lock()
	m.enrolls = append(m.enrolls, r)
	m.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(r.GetCsrDer())
	if err != nil {
		return nil, err
	}
	return &gridv1.EnrollResponse{CertChainDer: [][]byte{m.ca.issue(m.t, csr.PublicKey, 4, false, r.GetAgentId())}, CaBundlePem: m.ca.pem}, nil
}

func (m *enrollMaster) enrollCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.enrolls)
}

func enrollOptions(addr, dir, token string, registered chan struct{}) Options {
	return Options{
		MasterAddr: addr, AgentID: "a1", Hostname: "here", TLSDir: dir, JoinToken: token,
		Report:       func() Report { return Report{} },
		OnDesired:    func(Desired) {},
		OnRegistered: func() { registered <- struct{}{} },
		BackoffMin:   10 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
	}
}

// Issue 12: an agent without a certificate enrolls with its join token,
// keeps key and certificate (0600) in TLSDir, then registers over mutual
// TLS; the next start needs no token.
func TestAgentEnrollsThenRegisters(t *testing.T) {
	ca := newTestCA(t)
	m := &enrollMaster{ca: ca, t: t}
	addr := startTLSFakeMaster(t, ca, m)
	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tls")
	registered := make(chan struct{}, 4)
	c, err := New(enrollOptions(addr, dir, tok.String(), registered))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-registered:
	case err := <-done:
		t.Fatalf("Run returned before registering: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not registered within 30s")
	}
	cancel()
	<-done
	_ = c.Close()
	if n := m.enrollCount(); n != 1 {
		t.Fatalf("%d Enroll calls, want 1", n)
	}
	if got := m.enrolls[0]; got.GetTokenId() != tok.ID || got.GetAgentId() != "a1" || !strings.HasSuffix(tok.String(), "."+got.GetTokenSecret()) {
		t.Fatalf("Enroll request: token %q agent %q, want %q a1 with the token's secret", got.GetTokenId(), got.GetAgentId(), tok.ID)
	}
	for _, f := range []string{KeyFile, CertFile, CAFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 && os.PathSeparator == '/' {
			t.Errorf("%s mode %v, want 0600", f, perm)
		}
	}
	// Restart without the token: the stored identity is enough.
	c2, err := New(enrollOptions(addr, dir, "", registered))
	if err != nil {
		t.Fatalf("New with stored credentials and no token: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- c2.Run(ctx2) }()
	select {
	case <-registered:
	case err := <-done2:
		t.Fatalf("Run returned before registering: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not registered after restart within 30s")
	}
	cancel2()
	<-done2
	_ = c2.Close()
	if n := m.enrollCount(); n != 1 {
		t.Fatalf("%d Enroll calls after a restart, want still 1", n)
	}
}

// Issue 12: a token pinned to another CA (another master, or a man in the
// middle) is refused before the secret is sent: Run returns an error naming
// both fingerprints and the master saw no Enroll.
func TestAgentRefusesWrongPinBeforeSendingTheSecret(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	m := &enrollMaster{ca: ca, t: t}
	addr := startTLSFakeMaster(t, ca, m)
	tok, err := jointoken.Generate(mtls.Fingerprint(other.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(enrollOptions(addr, filepath.Join(t.TempDir(), "tls"), tok.String(), make(chan struct{}, 1)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Run(t.Context())
	if !errors.Is(err, mtls.ErrPinMismatch) {
		t.Fatalf("Run with a token pinned to another CA = %v, want ErrPinMismatch", err)
	}
	for _, fp := range []string{mtls.Fingerprint(ca.cert.Raw), mtls.Fingerprint(other.cert.Raw)} {
		if !strings.Contains(err.Error(), fp) {
			t.Errorf("error %q does not name fingerprint %s", err, fp)
		}
	}
	if n := m.enrollCount(); n != 0 {
		t.Fatalf("the master saw %d Enroll calls, want none", n)
	}
}

// Issue 12: with neither a certificate nor a token the agent stops at once
// saying how to get a token.
func TestAgentWithoutCredentials(t *testing.T) {
	_, err := New(enrollOptions("127.0.0.1:1", filepath.Join(t.TempDir(), "tls"), "", nil))
	if !errors.Is(err, ErrNoCredentials) || !strings.Contains(err.Error(), "sutra tokens create") {
		t.Fatalf("New without credentials = %v, want ErrNoCredentials naming 'sutra tokens create'", err)
	}
}

// renewMaster is a fake master that renews certificates (for a day).
type renewMaster struct {
	fakeMaster
	ca     *testCA
	t      *testing.T
	mu     sync.Mutex
	renews []*gridv1.RenewCertificateRequest
}

func (m *renewMaster) RenewCertificate(_ context.Context, r *gridv1.RenewCertificateRequest) (*gridv1.RenewCertificateResponse, error) {
	m.mu.Lock()
	m.renews = append(m.renews, r)
	m.mu.Unlock()
	csr, err := x509.ParseCertificateRequest(r.GetCsrDer())
	if err != nil {
		return nil, err
	}
	der := m.ca.issueValid(m.t, csr.PublicKey, 5, false, r.GetAgentId(), time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour))
	return &gridv1.RenewCertificateResponse{CertChainDer: [][]byte{der}, CaBundlePem: m.ca.pem}, nil
}

func (m *renewMaster) renewCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.renews)
}

// Issue 12: past two thirds of its certificate's lifetime the agent renews
// it over its mutual-TLS connection (no token), stores the new pair and
// keeps going; the next start loads the renewed pair.
func TestAgentRenewsItsCertificate(t *testing.T) {
	ca := newTestCA(t)
	m := &renewMaster{ca: ca, t: t}
	addr := startTLSFakeMaster(t, ca, m)
	dir := filepath.Join(t.TempDir(), "tls")
	// Valid for 10 minutes, 9 of them gone: due for renewal at once.
	ca.writeAgentValid(t, dir, "a1", time.Now().Add(-9*time.Minute), time.Now().Add(time.Minute))
	before, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(enrollOptions(addr, dir, "", make(chan struct{}, 16)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for m.renewCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no renewal within 30s of a certificate past 2/3 of its lifetime")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait until the pair is stored (the renewal logs after the renames).
	var after []byte
	for {
		after, _ = os.ReadFile(filepath.Join(dir, CertFile))
		if string(after) != string(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	_ = c.Close()
	if r := m.renews[0]; r.GetAgentId() != "a1" {
		t.Fatalf("RenewCertificate for %q, want a1", r.GetAgentId())
	}
	if n := m.renewCount(); n != 1 {
		t.Errorf("%d renewals, want 1 (the new certificate is good for a day)", n)
	}
	_, leaf, err := loadCredentials(dir)
	if err != nil {
		t.Fatalf("load the renewed pair: %v", err)
	}
	if leaf.NotAfter.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("stored certificate expires %s, want the renewed one (a day)", leaf.NotAfter)
	}
}

// A renewal cut between its two renames (new key, old certificate, new
// certificate still in agent.crt.next) is completed at the next load.
func TestInterruptedRenewalIsCompleted(t *testing.T) {
	ca := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	ca.writeAgent(t, dir, "a1")
	key, _ := mtls.NewKey()
	der := ca.issueValid(t, key.Public(), 9, false, "a1", time.Now().Add(-time.Minute), time.Now().Add(48*time.Hour))
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile+nextSuffix), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, leaf, err := loadCredentials(dir)
	if err != nil {
		t.Fatalf("loadCredentials after an interrupted renewal: %v", err)
	}
	if leaf.NotAfter.Before(time.Now().Add(24 * time.Hour)) {
		t.Fatalf("loaded certificate expires %s, want the renewed one", leaf.NotAfter)
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile+nextSuffix)); err == nil {
		t.Error("agent.crt.next is still there")
	}
}
