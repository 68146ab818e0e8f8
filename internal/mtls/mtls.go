// Package mtls is what both sides of the control plane's mutual TLS share
// (issue 12, not wired yet): the CA pin (Fingerprint, PinnedRoots), an
// agent's identity in its certificate (AgentURI, AgentID), the client's TLS
// configuration, and the key and certificate request an agent makes to
// enroll. The master's certificate authority is master/pki.
//
// Trust model. An agent trusts exactly one CA certificate: the one whose
// fingerprint (lowercase hex SHA-256 of its DER) its join token pins.
// PinnedRoots checks the CA bundle a master hands out against the pin
// before the agent sends anything secret, and refuses a mismatch (another
// master, or a man in the middle) with an error naming both fingerprints;
// the pool it returns holds only the pinned certificate, and ClientConfig
// never falls back to the system roots. An agent's identity is the URI
// SAN sutra://agent/<id> of a certificate the master issued (and its common
// name); AgentID reads it, and must only be given a certificate the TLS
// handshake verified.
package mtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/jointoken"
)

// URIScheme and URIHost make an agent's identity URI: sutra://agent/<id>.
const (
	URIScheme = "sutra"
	URIHost   = "agent"
)

// MaxBundleSize bounds the CA bundle PinnedRoots reads.
const MaxBundleSize = 1 << 20

// Errors callers act on.
var (
	// ErrPinMismatch: the CA bundle is not the one the token pins.
	ErrPinMismatch = errors.New("CA fingerprint mismatch")
	// ErrNotAgent: a certificate that does not name exactly one valid agent.
	ErrNotAgent = errors.New("not an agent certificate")
)

// Fingerprint is the lowercase hex SHA-256 of a certificate's DER: the pin
// a join token carries.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// PinnedRoots checks that the first certificate of bundlePEM (the CA
// bundle a master serves) has fingerprint pin, and returns a pool holding
// only that certificate. A mismatch wraps ErrPinMismatch and names both
// fingerprints.
func PinnedRoots(bundlePEM []byte, pin string) (*x509.CertPool, *x509.Certificate, error) {
	if err := jointoken.ValidateFingerprint(pin); err != nil {
		return nil, nil, err
	}
	if len(bundlePEM) > MaxBundleSize {
		return nil, nil, fmt.Errorf("CA bundle of %d bytes: at most %d", len(bundlePEM), MaxBundleSize)
	}
	var first *pem.Block
	for rest := bundlePEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			first = b
			break
		}
	}
	if first == nil {
		return nil, nil, errors.New("the master's CA bundle holds no PEM certificate")
	}
	got := Fingerprint(first.Bytes)
	if got != pin {
		return nil, nil, fmt.Errorf("%w: the master's CA is %s, the join token pins %s: this is not the master that made the token (or someone is in between); nothing secret was sent",
			ErrPinMismatch, got, pin)
	}
	ca, err := x509.ParseCertificate(first.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("the pinned CA certificate does not parse: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("the pinned certificate is not a CA certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, ca, nil
}

// ClientConfig is the client side of the control plane's TLS: TLS 1.3, the
// server verified against roots only (nil: trust nothing, never the system
// roots), cert presented when not nil, and a session cache so reconnects
// resume. The caller sets ServerName when it dials by something other than
// the host in its address.
func ClientConfig(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	if roots == nil {
		roots = x509.NewCertPool()
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		RootCAs:            roots,
		ClientSessionCache: tls.NewLRUClientSessionCache(16),
	}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// AgentURI is the identity URI of agent id: sutra://agent/<id>.
func AgentURI(id string) *url.URL { return &url.URL{Scheme: URIScheme, Host: URIHost, Path: "/" + id} }

// AgentID returns the agent id a verified client certificate names: its
// only URI SAN sutra://agent/<id>, with a valid id equal to its common
// name, on a non-CA certificate for client authentication.
func AgentID(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no certificate", ErrNotAgent)
	}
	if cert.IsCA {
		return "", fmt.Errorf("%w: a CA certificate", ErrNotAgent)
	}
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("%w: %d URI names, want one %s://%s/<id>", ErrNotAgent, len(cert.URIs), URIScheme, URIHost)
	}
	u := cert.URIs[0]
	id, ok := strings.CutPrefix(u.Path, "/")
	if u.Scheme != URIScheme || u.Host != URIHost || !ok || u.User != nil || u.RawQuery != "" || u.ForceQuery ||
		u.Fragment != "" || u.Opaque != "" || u.RawPath != "" {
		return "", fmt.Errorf("%w: URI name is not %s://%s/<id>", ErrNotAgent, URIScheme, URIHost)
	}
	if err := ident.Validate("agent", id); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotAgent, err)
	}
	if cert.Subject.CommonName != id {
		return "", fmt.Errorf("%w: common name %q differs from the URI name %q", ErrNotAgent, cert.Subject.CommonName, id)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "", fmt.Errorf("%w: not for client authentication", ErrNotAgent)
	}
	return id, nil
}

// NewKey makes an agent's private key: ECDSA P-256 from crypto/rand.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR makes the certificate signing request (DER) an agent sends to
// enroll or renew: it proves possession of key; the master ignores
// everything in it but the public key.
func NewCSR(key crypto.Signer, agentID string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: agentID}}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return der, nil
}
