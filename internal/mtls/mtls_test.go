package mtls

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// newCert makes a self-signed certificate (a CA when ca is set) and returns its DER.
func newCert(t testing.TB, ca bool) []byte {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: ca, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemOf(der ...[]byte) []byte {
	var out []byte
	for _, d := range der {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	return out
}

func TestPinnedRoots(t *testing.T) {
	ca, other := newCert(t, true), newCert(t, true)
	pin := Fingerprint(ca)
	if len(pin) != 64 || strings.ToLower(pin) != pin {
		t.Fatalf("Fingerprint = %q, want 64 lowercase hex", pin)
	}
	pool, cert, err := PinnedRoots(pemOf(ca, other), pin)
	if err != nil {
		t.Fatalf("PinnedRoots(matching) = %v", err)
	}
	if Fingerprint(cert.Raw) != pin {
		t.Fatal("PinnedRoots returned another certificate")
	}
	// Only the pinned certificate is trusted, not the rest of the bundle.
	oc, _ := x509.ParseCertificate(other)
	if _, err := oc.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Fatal("the pool trusts a certificate of the bundle that is not pinned")
	}
	// A leading non-certificate block is skipped.
	withKey := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), pemOf(ca)...)
	if _, _, err := PinnedRoots(withKey, pin); err != nil {
		t.Fatalf("PinnedRoots(key block then CA) = %v", err)
	}

	_, _, err = PinnedRoots(pemOf(other, ca), pin)
	if !errors.Is(err, ErrPinMismatch) || !strings.Contains(err.Error(), pin) || !strings.Contains(err.Error(), Fingerprint(other)) {
		t.Fatalf("PinnedRoots(other CA first) = %v, want ErrPinMismatch naming both fingerprints", err)
	}
	leaf := newCert(t, false)
	for name, c := range map[string]struct {
		bundle []byte
		pin    string
	}{
		"empty bundle":   {nil, pin},
		"garbage":        {[]byte("-----BEGIN CERTIFICATE-----\nnope\n"), pin},
		"huge":           {make([]byte, MaxBundleSize+1), pin},
		"not a CA":       {pemOf(leaf), Fingerprint(leaf)},
		"bad DER pinned": {pemOf([]byte("junk")), Fingerprint([]byte("junk"))},
		"upper-case pin": {pemOf(ca), strings.ToUpper(pin)},
		"empty pin":      {pemOf(ca), ""},
	} {
		if _, _, err := PinnedRoots(c.bundle, c.pin); err == nil {
			t.Errorf("%s: PinnedRoots succeeded", name)
		}
	}
}

func TestClientConfig(t *testing.T) {
	c := ClientConfig(nil, nil)
	if c.MinVersion != tls.VersionTLS13 || c.RootCAs == nil || c.ClientSessionCache == nil || len(c.Certificates) != 0 {
		t.Fatalf("ClientConfig(nil, nil) = min %x roots %v cache %v certs %d", c.MinVersion, c.RootCAs, c.ClientSessionCache, len(c.Certificates))
	}
	if !c.RootCAs.Equal(x509.NewCertPool()) {
		t.Fatal("nil roots must mean an empty pool, not the system roots")
	}
	cert := &tls.Certificate{Certificate: [][]byte{newCert(t, false)}}
	if c := ClientConfig(nil, cert); len(c.Certificates) != 1 {
		t.Fatal("the client certificate is not presented")
	}
}

func TestNewCSR(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := NewCSR(key, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR does not parse or verify: %v", err)
	}
	if !csr.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) || csr.Subject.CommonName != "agent-1" {
		t.Fatal("CSR is not for the key and id")
	}
}

func TestAgentURI(t *testing.T) {
	if got := AgentURI("agent-1").String(); got != "sutra://agent/agent-1" {
		t.Fatalf("AgentURI = %q", got)
	}
}

func FuzzPinnedRoots(f *testing.F) {
	ca := newCert(f, true)
	pin := Fingerprint(ca)
	f.Add(pemOf(ca))
	f.Add(pemOf(ca, ca))
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add(append([]byte("garbage\n"), pemOf(ca)...))
	f.Fuzz(func(t *testing.T, bundle []byte) {
		pool, cert, err := PinnedRoots(bundle, pin)
		if err != nil {
			return
		}
		// Accepted only with the pinned certificate.
		if pool == nil || cert == nil || Fingerprint(cert.Raw) != pin {
			t.Fatal("PinnedRoots accepted a bundle without the pinned certificate")
		}
	})
}
