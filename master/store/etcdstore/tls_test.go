package etcdstore_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
	"go.etcd.io/etcd/server/v3/embed"
)

// testCA issues certificates for the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate and its key (0600) for cn into dir.
func (ca *testCA) issue(t *testing.T, dir, cn string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestMutualTLS: against an etcd that requires client certificates over
// TLS, LoadTLS's configuration works; without a client certificate, or
// trusting another CA, Open fails naming the endpoint.
func TestMutualTLS(t *testing.T) {
	t.Parallel() // its own etcd
	dir := t.TempDir()
	ca, other := newCA(t, "etcd CA"), newCA(t, "another CA")
	caFile, otherFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "other.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherFile, other.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey := ca.issue(t, dir, "etcd-server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, dir, "sutra-master", x509.ExtKeyUsageClientAuth)
	ep := startEtcd(t, "https", func(cfg *embed.Config) {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = srvCert, srvKey
		cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = caFile, true
	})
	eps, err := etcdstore.ParseEndpoints(ep)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tlsCfg, err := etcdstore.LoadTLS(cliCert, cliKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, etcdstore.Options{Endpoints: eps, TLS: tlsCfg, Prefix: randomPrefix(t)})
	if err := s.Apply(ctx, []store.Op{store.Put(store.TableMeta, []byte("k"), []byte("over TLS"))}); err != nil {
		t.Fatalf("Apply over mutual TLS = %v", err)
	}
	if v, _, err := s.Get(ctx, store.TableMeta, []byte("k")); err != nil || string(v) != "over TLS" {
		t.Fatalf("Get over mutual TLS = %q, %v", v, err)
	}

	quick := etcdstore.Options{Endpoints: eps, DialTimeout: 500 * time.Millisecond, RequestTimeout: 500 * time.Millisecond}
	noCert, err := etcdstore.LoadTLS("", "", caFile)
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, err := etcdstore.LoadTLS(cliCert, cliKey, otherFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tls  *tls.Config
	}{{"without a client certificate", noCert}, {"trusting another CA", wrongCA}} {
		cfg, name := quick, c.name
		cfg.TLS = c.tls
		s, err := etcdstore.Open(ctx, cfg)
		if err == nil {
			_ = s.Close()
			t.Errorf("Open %s = nil error", name)
		} else if !strings.Contains(err.Error(), eps[0]) {
			t.Errorf("Open %s = %v, want an error naming %s", name, err, eps[0])
		}
	}
}
