// Package pki is the master's certificate authority: it makes or loads the
// CA and the server certificate the control plane serves, issues the client
// certificates that identify agents, and builds the TLS configurations both
// sides use.
//
// Trust model. The master's CA is the root of all control-plane trust. An
// agent trusts the master only if the master's certificate chains to the CA
// whose fingerprint (SHA-256 of the CA certificate's DER, see Fingerprint)
// the agent pinned from its join token; nothing else (no system roots, no
// hostname-only trust) makes a server acceptable. The master trusts a
// client as agent X only if the client proved possession of the key of a
// certificate that chains to the client CA, is valid now, is meant for
// client authentication, and names X in its URI SAN sutra://agent/X (and
// as its common name); see AgentIDFromCert. The master issues such a
// certificate only through IssueClient, for the agent id the caller (the
// enrollment RPC, after checking a join token) decided on: everything in
// the certificate signing request except its public key is ignored, so a
// client cannot ask for extra names, usages or a CA bit. Weak keys (RSA
// under 2048 bits, curves other than P-256/P-384/P-521, anything but
// ECDSA, Ed25519 and RSA) are refused. Connections are TLS 1.3 only; the
// server asks for a client certificate but does not require one
// (enrollment happens before the agent has one), so the caller must check
// the peer's identity on every call that needs it: a connection without a
// verified certificate is anonymous. A certificate from another CA, an
// expired one, or a server certificate presented as a client, fails the
// handshake. Revocation (a denylist checked on every call) is the caller's
// job; this package only verifies the chain.
//
// Files. By default everything lives in Options.Dir ({data_dir}/tls, mode
// 0700): ca.crt and ca.key (made once, valid ten years, never regenerated:
// replacing it would lock out every enrolled agent), server.crt and
// server.key (valid one year, regenerated at start when it expires within
// 30 days, when its names differ from the wanted ones, or when it is not
// signed by the CA). Keys are ECDSA P-256, written 0600 as PKCS#8 PEM;
// every file is written temp + fsync + rename + directory fsync, keys
// first and ca.crt last of the CA's files, so that a crash leaves either
// no CA (a new one is made, no agent could have pinned the lost one) or a
// whole one. An operator may supply the server certificate, its key and the
// CA bundle agents must trust instead (Options.CertFile, KeyFile, CAFile);
// the master then never writes them, and client certificates are issued by
// the CA key in Options.CAKeyFile if given (it must belong to the first
// certificate of CAFile), or else by the master's own CA in Dir, which then
// only verifies clients. ticket.keys (0600) holds the TLS session ticket
// keys, rotated daily, so that agents resume their sessions after a
// restart instead of all repeating full handshakes (tickets.go).
//
// Several masters (Options.Shared, issue 16). The CA and its key, and the
// session ticket keys, live in the store every master shares (etcd), one
// set for the whole grid: the first master creates the CA (or uploads the
// one already in its Dir), the others load it, and Dir keeps a mirror.
// A Dir holding another CA than the store's is refused with both
// fingerprints (shared.go). The CA key in the store is as secret as
// ca.key: etcd must admit the masters only (client-certificate
// authentication). Each master keeps its own server certificate, issued
// from the shared CA for its own names. With an operator's CertFile,
// KeyFile and CAFile, the operator gives every master the same files; only
// the master's own client-issuing CA (without CAKeyFile) is shared.
package pki

import (
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
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/smallfile"
	"github.com/sutragrid/sutra/master/store"
)

// File names in Options.Dir.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Validity periods and bounds.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	// ServerRenewBefore: a server certificate expiring within this is
	// regenerated at start (and by RenewServer).
	ServerRenewBefore = 30 * 24 * time.Hour
	// DefaultClientLifetime is the lifetime of an agent certificate when
	// IssueClient is given 0; MinClientLifetime and MaxClientLifetime bound it.
	DefaultClientLifetime = 30 * 24 * time.Hour
	MinClientLifetime     = time.Minute
	MaxClientLifetime     = 365 * 24 * time.Hour
	// backdate allows for clocks a little behind the master's.
	backdate = 5 * time.Minute
	// maxCSRSize bounds the CSR IssueClient parses.
	maxCSRSize = 16 << 10
	// maxNames bounds the extra advertise names.
	maxNames = 64
)

// Errors callers act on.
var (
	// ErrBadCSR: the CSR is malformed, its signature is wrong, or its key is weak or unsupported.
	ErrBadCSR = errors.New("bad certificate signing request")
	// ErrNotAgent: a certificate that does not name exactly one valid
	// agent (internal/mtls.ErrNotAgent).
	ErrNotAgent = mtls.ErrNotAgent
	// ErrCannotIssue: no CA key to issue client certificates with.
	ErrCannotIssue = errors.New("cannot issue client certificates")
)

// Options configure Open. The zero value of every field but Dir is useful.
type Options struct {
	// Dir holds the generated files ({data_dir}/tls). Required.
	Dir string
	// Hostname is the first DNS name of the server certificate; empty:
	// os.Hostname.
	Hostname string
	// AdvertiseNames are extra names (DNS names or IP addresses) clients
	// may use to reach the master (--advertise), added to the server
	// certificate's SANs.
	AdvertiseNames []string
	// Addrs lists the machine's addresses for the SANs; nil: every address
	// of every interface. Loopback and IPv6 link-local addresses are left
	// out (127.0.0.1 and ::1 are always added; a link-local address is
	// useless without its zone, which a certificate cannot carry).
	Addrs func() ([]net.IP, error)

	// CertFile, KeyFile and CAFile, all three or none, are an operator's
	// server certificate, its key and the CA bundle (PEM) agents must trust
	// to reach it; they are read, never written. CAKeyFile, optional,
	// is the key of CAFile's first certificate, to issue client
	// certificates with; without it the master's own CA in Dir issues them.
	CertFile, KeyFile, CAFile, CAKeyFile string

	// Shared is the store several masters share (etcd); nil: one master
	// alone, everything in Dir as the package doc says. With it the CA
	// (certificate and key) and the session ticket keys live in the store,
	// one set for every master, and Dir holds a mirror (shared.go). An
	// operator's CertFile/KeyFile/CAFile/CAKeyFile are still read from
	// files, which the operator distributes to every master.
	Shared store.Store

	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Logger; nil: discard.
	Logger *slog.Logger
}

// Validate reports every problem of o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("pki: Dir is empty: give the directory for the TLS files ({data_dir}/tls)"))
	}
	n := 0
	for _, f := range []string{o.CertFile, o.KeyFile, o.CAFile} {
		if f != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		errs = append(errs, errors.New("pki: give the server certificate, its key and the CA file together, or none of them"))
	}
	if o.CAKeyFile != "" && o.CAFile == "" {
		errs = append(errs, errors.New("pki: a CA key file needs its CA file"))
	}
	if len(o.AdvertiseNames) > maxNames {
		errs = append(errs, fmt.Errorf("pki: %d advertise names: at most %d", len(o.AdvertiseNames), maxNames))
	}
	for _, name := range o.AdvertiseNames {
		if err := validName(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validName accepts an IP address or a DNS name (letters, digits, hyphens,
// dots; a leading "*." wildcard label is refused: names are exact).
func validName(name string) error {
	if net.ParseIP(name) != nil {
		return nil
	}
	if name == "" || len(name) > 253 {
		return fmt.Errorf("pki: advertise name %q: want a DNS name or an IP address of at most 253 bytes", name)
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("pki: advertise name %q is not a DNS name or an IP address", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("pki: advertise name %q has %q: a DNS name has only letters, digits, hyphens and dots", name, c)
			}
		}
	}
	return nil
}

// PKI is an open certificate authority. Its methods are safe for
// concurrent use.
type PKI struct {
	opts Options
	log  *slog.Logger

	// ca is the certificate agents pin and trust (CAFile's first or our own).
	ca     *x509.Certificate
	caPEM  []byte
	roots  *x509.CertPool
	issuer *x509.Certificate // signs client certificates (nil: cannot issue)
	key    crypto.Signer
	// clients verifies client certificates: the issuer.
	clients *x509.CertPool
	own     bool // the server certificate is ours to (re)generate

	mu     sync.RWMutex
	server *tls.Certificate

	// tickets are the persisted session ticket keys (tickets.go).
	tickets *tickets
}

// Open is OpenContext with a background context.
func Open(o Options) (*PKI, error) { return OpenContext(context.Background(), o) }

// OpenContext loads the CA and server certificate, creating or renewing
// them as the package doc says; ctx bounds the shared store's calls.
func OpenContext(ctx context.Context, o Options) (*PKI, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("pki: hostname: %w", err)
		}
		o.Hostname = h
	}
	if o.Addrs == nil {
		o.Addrs = interfaceAddrs
	}
	p := &PKI{opts: o, log: o.Logger}
	if err := ensureDir(o.Dir); err != nil {
		return nil, err
	}
	if o.CertFile != "" {
		if err := p.loadOperator(ctx); err != nil {
			return nil, err
		}
		if err := p.openTickets(ctx); err != nil {
			return nil, err
		}
		return p, nil
	}
	p.own = true
	ca, key, err := p.loadOrCreateCA(ctx)
	if err != nil {
		return nil, err
	}
	p.ca, p.issuer, p.key = ca, ca, key
	p.caPEM = pemCert(ca.Raw)
	p.roots = x509.NewCertPool()
	p.roots.AddCert(ca)
	p.clients = p.roots
	if _, err := p.RenewServer(); err != nil {
		return nil, err
	}
	if err := p.openTickets(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// openTickets loads the session ticket keys, bound to the CAs.
func (p *PKI) openTickets(ctx context.Context) error {
	t, err := openTickets(ctx, p.path(TicketKeysFile), Fingerprint(p.ca)+" "+Fingerprint(p.issuer), p.opts.Now, p.log, p.opts.Shared)
	p.tickets = t
	return err
}

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
	}
	return nil
}

func (p *PKI) path(name string) string { return filepath.Join(p.opts.Dir, name) }

// loadOrCreateCA loads ca.crt and ca.key, or makes them when ca.crt does
// not exist (ca.crt is written last: without it there is no CA). With a
// shared store the store's CA is the one (sharedCA).
func (p *PKI) loadOrCreateCA(ctx context.Context) (*x509.Certificate, crypto.Signer, error) {
	if p.opts.Shared != nil {
		return p.sharedCA(ctx)
	}
	ca, key, exists, err := p.loadLocalCA()
	if !exists {
		return p.createCA()
	}
	if err != nil {
		return nil, nil, err
	}
	if err := p.checkCA(ca, p.path(CACertFile)); err != nil {
		return nil, nil, err
	}
	p.warnMode(p.path(CAKeyFile))
	p.log.Info("CA loaded", "file", p.path(CACertFile), "fingerprint", Fingerprint(ca), "expires", ca.NotAfter.UTC())
	return ca, key, nil
}

// loadLocalCA reads ca.crt and ca.key. exists is false when ca.crt does
// not exist; ca is the certificate when it parsed, key its key when that
// loaded and matched; err says what is wrong and what to do.
func (p *PKI) loadLocalCA() (ca *x509.Certificate, key crypto.Signer, exists bool, err error) {
	certPath, keyPath := p.path(CACertFile), p.path(CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, true, fmt.Errorf("pki: read CA: %w", err)
	}
	ca, err = parseCertPEM(certPEM)
	if err != nil {
		return nil, nil, true, fmt.Errorf("pki: %s: %w (restore it from a backup: a new CA would lock out every enrolled agent)", certPath, err)
	}
	key, err = readKey(keyPath)
	if err != nil {
		return ca, nil, true, fmt.Errorf("pki: the CA certificate %s exists but its key does not load: %w (restore %s from a backup)", certPath, err, CAKeyFile)
	}
	if !samePublicKey(ca.PublicKey, key.Public()) {
		return ca, nil, true, fmt.Errorf("pki: %s does not belong to %s: restore the matching pair from a backup", keyPath, certPath)
	}
	return ca, key, true, nil
}

// checkCA refuses a certificate that is not a CA or has expired.
func (p *PKI) checkCA(ca *x509.Certificate, where string) error {
	if !ca.IsCA {
		return fmt.Errorf("pki: %s is not a CA certificate", where)
	}
	if p.opts.Now().After(ca.NotAfter) {
		fix := "move the tls directory away and restart"
		if p.opts.Shared != nil {
			fix = "delete the store's " + store.TableMeta + "/" + SharedCAKey + " key (etcdctl del), move every master's tls directory away and restart them"
		}
		return fmt.Errorf("pki: the CA %s expired on %s: every agent must be re-enrolled with a new CA (%s)",
			where, ca.NotAfter.UTC().Format(time.RFC3339), fix)
	}
	return nil
}

func (p *PKI) createCA() (*x509.Certificate, crypto.Signer, error) {
	ca, key, err := p.newCA()
	if err != nil {
		return nil, nil, err
	}
	if err := p.writeCA(ca, key); err != nil {
		return nil, nil, err
	}
	p.log.Info("new CA created", "file", p.path(CACertFile), "fingerprint", Fingerprint(ca), "expires", ca.NotAfter.UTC())
	return ca, key, nil
}

// writeCA writes ca.key, then ca.crt.
func (p *PKI) writeCA(ca *x509.Certificate, key crypto.Signer) error {
	if err := writeKey(p.path(CAKeyFile), key); err != nil {
		return err
	}
	if err := atomicfile.Write(p.path(CACertFile), pemCert(ca.Raw), 0o644); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// newCA makes a CA in memory.
func (p *PKI) newCA() (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: CA key: %w", err)
	}
	now := p.opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Sutra Grid CA " + p.opts.Hostname, Organization: []string{"Sutra Grid"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA: %w", err)
	}
	return ca, key, nil
}

// SANs is the names the server certificate is made for: the hostname, the
// advertise names, localhost, 127.0.0.1, ::1 and every non-loopback,
// non-link-local interface address, without duplicates, sorted.
func (p *PKI) SANs() (dns []string, ips []net.IP, err error) {
	addrs, err := p.opts.Addrs()
	if err != nil {
		return nil, nil, fmt.Errorf("pki: interface addresses: %w", err)
	}
	dnsSet := map[string]bool{"localhost": true}
	if p.opts.Hostname != "" && validName(p.opts.Hostname) == nil && net.ParseIP(p.opts.Hostname) == nil {
		dnsSet[strings.ToLower(p.opts.Hostname)] = true
	}
	ipSet := map[string]net.IP{}
	addIP := func(ip net.IP) {
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		ipSet[ip.String()] = ip
	}
	addIP(net.IPv4(127, 0, 0, 1))
	addIP(net.IPv6loopback)
	for _, ip := range addrs {
		if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
			continue
		}
		addIP(ip)
	}
	for _, n := range p.opts.AdvertiseNames {
		if ip := net.ParseIP(n); ip != nil {
			addIP(ip)
		} else {
			dnsSet[strings.ToLower(strings.TrimSuffix(n, "."))] = true
		}
	}
	for n := range dnsSet {
		dns = append(dns, n)
	}
	slices.Sort(dns)
	keys := make([]string, 0, len(ipSet))
	for k := range ipSet {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ips = append(ips, ipSet[k])
	}
	return dns, ips, nil
}

func interfaceAddrs() ([]net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips, nil
}

// RenewServer loads server.crt and server.key and regenerates them if they
// are missing, unreadable, not signed by the CA, expiring within
// ServerRenewBefore, or made for other names than SANs. It reports whether
// it regenerated them. Serving connections pick up the new certificate on
// their next handshake. With an operator's certificate it does nothing.
func (p *PKI) RenewServer() (bool, error) {
	if !p.own {
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dns, ips, err := p.SANs()
	if err != nil {
		return false, err
	}
	certPath, keyPath := p.path(ServerCertFile), p.path(ServerKeyFile)
	now := p.opts.Now()
	if p.server == nil {
		if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
			p.server = &c
			p.warnMode(keyPath)
		} else if !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("server certificate does not load: making a new one", "file", certPath, "err", err)
		}
	}
	if p.server != nil {
		reason := p.staleReason(p.server.Leaf, dns, ips, now)
		if reason == "" {
			return false, nil
		}
		p.log.Info("renewing the server certificate", "reason", reason)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("pki: server key: %w", err)
	}
	notAfter := now.Add(ServerValidity)
	if notAfter.After(p.ca.NotAfter) {
		notAfter = p.ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: p.opts.Hostname, Organization: []string{"Sutra Grid"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.key)
	if err != nil {
		return false, fmt.Errorf("pki: create server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return false, fmt.Errorf("pki: create server certificate: %w", err)
	}
	// The key first: a crash between the two writes leaves a pair that
	// does not match, which the next start regenerates.
	if err := writeKey(keyPath, key); err != nil {
		return false, err
	}
	if err := atomicfile.Write(certPath, pemCert(der), 0o644); err != nil {
		return false, fmt.Errorf("pki: %w", err)
	}
	p.server = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	p.log.Info("server certificate written", "file", certPath, "dns", dns, "ips", ips, "expires", notAfter.UTC())
	return true, nil
}

// staleReason says why leaf must be regenerated, or "".
func (p *PKI) staleReason(leaf *x509.Certificate, dns []string, ips []net.IP, now time.Time) string {
	if leaf == nil {
		return "no certificate"
	}
	if err := leaf.CheckSignatureFrom(p.ca); err != nil {
		return "not signed by the CA"
	}
	if now.Add(ServerRenewBefore).After(leaf.NotAfter) {
		return "expires " + leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	have := slices.Clone(leaf.DNSNames)
	slices.Sort(have)
	if !slices.Equal(have, dns) {
		return fmt.Sprintf("DNS names changed from %v to %v", have, dns)
	}
	haveIPs, wantIPs := ipStrings(leaf.IPAddresses), ipStrings(ips)
	if !slices.Equal(haveIPs, wantIPs) {
		return fmt.Sprintf("addresses changed from %v to %v", haveIPs, wantIPs)
	}
	return ""
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	slices.Sort(out)
	return out
}

// maxOperatorPEM bounds each certificate, key or CA bundle file the
// operator names (a chain of a few certificates is a few KB).
const maxOperatorPEM = 1 << 20

// loadOperator reads the operator's certificate, key and CA bundle, and the
// CA key or our own CA for client certificates.
func (p *PKI) loadOperator(ctx context.Context) error {
	o := p.opts
	// Operator files: a FIFO or device is refused, not waited on.
	certPEM, err := smallfile.Read(o.CertFile, maxOperatorPEM)
	if err != nil {
		return fmt.Errorf("pki: server certificate: %w", err)
	}
	keyPEM, err := smallfile.Read(o.KeyFile, maxOperatorPEM)
	if err != nil {
		return fmt.Errorf("pki: server key: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("pki: server certificate %s with key %s: %w", o.CertFile, o.KeyFile, err)
	}
	bundle, err := smallfile.Read(o.CAFile, maxOperatorPEM)
	if err != nil {
		return fmt.Errorf("pki: CA file: %w", err)
	}
	cas, err := parseCertsPEM(bundle)
	if err != nil {
		return fmt.Errorf("pki: CA file %s: %w", o.CAFile, err)
	}
	p.ca, p.caPEM, p.roots = cas[0], bundle, x509.NewCertPool()
	for _, ca := range cas {
		p.roots.AddCert(ca)
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: inter, CurrentTime: p.opts.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("pki: the server certificate %s does not verify against the CA file %s: %w", o.CertFile, o.CAFile, err)
	}
	p.server = &c
	if left := c.Leaf.NotAfter.Sub(p.opts.Now()); left < ServerRenewBefore {
		p.log.Warn("the operator's server certificate expires soon: replace it and restart", "file", o.CertFile,
			"expires", c.Leaf.NotAfter.UTC())
	}
	if o.CAKeyFile != "" {
		key, err := readKey(o.CAKeyFile)
		if err != nil {
			return fmt.Errorf("pki: CA key: %w", err)
		}
		if !samePublicKey(p.ca.PublicKey, key.Public()) {
			return fmt.Errorf("pki: the CA key %s does not belong to the first certificate of %s", o.CAKeyFile, o.CAFile)
		}
		p.issuer, p.key, p.clients = p.ca, key, p.roots
		return nil
	}
	ca, key, err := p.loadOrCreateCA(ctx)
	if err != nil {
		return err
	}
	p.issuer, p.key = ca, key
	p.clients = x509.NewCertPool()
	p.clients.AddCert(ca)
	return nil
}

// CA is the certificate agents pin (the first of the CA bundle).
func (p *PKI) CA() *x509.Certificate { return p.ca }

// CAPEM is the CA bundle agents fetch and check against their pin.
func (p *PKI) CAPEM() []byte { return slices.Clone(p.caPEM) }

// Roots is a pool of the CA bundle, for clients on the master's side (the
// CLI, tests).
func (p *PKI) Roots() *x509.CertPool { return p.roots }

// Fingerprint is the pin of the CA: Fingerprint(p.CA()).
func (p *PKI) Fingerprint() string { return Fingerprint(p.ca) }

// Fingerprint is the lowercase hex SHA-256 of cert's DER, the pin a join
// token carries (internal/mtls.Fingerprint, which agents use). An operator
// can check it by hand: openssl x509 -in ca.crt -outform DER | sha256sum.
func Fingerprint(cert *x509.Certificate) string { return mtls.Fingerprint(cert.Raw) }

// ServerCertificate is the certificate the server presents now.
func (p *PKI) ServerCertificate() *tls.Certificate {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.server
}

// ServerTLSConfig is the server side of mutual TLS: TLS 1.3, the current
// server certificate (renewals apply to new handshakes), client
// certificates verified against the client CA when given (VerifyClientCertIfGiven:
// an enrolling agent has none yet; see the package doc), session tickets on
// so reconnect storms resume instead of repeating full handshakes.
func (p *PKI) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.ServerCertificate(), nil
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  p.clients,
		// Tickets under the keys in ticket.keys, so that they survive a
		// restart (tickets.go).
		WrapSession:   p.tickets.wrap,
		UnwrapSession: p.tickets.unwrap,
	}
}

// ClientTLSConfig is internal/mtls.ClientConfig: TLS 1.3, the server
// verified against roots only (nil: trust nothing, never the system
// roots), cert presented when not nil, a session cache for resumption.
func ClientTLSConfig(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	return mtls.ClientConfig(roots, cert)
}

// IssueClient issues the client certificate of agent agentID for the key
// in csrDER, valid for lifetime (0: DefaultClientLifetime; at most until
// the CA expires). Only the CSR's public key is used. It returns the
// certificate's DER.
func (p *PKI) IssueClient(csrDER []byte, agentID string, lifetime time.Duration) ([]byte, error) {
	if p.key == nil {
		return nil, ErrCannotIssue
	}
	if err := ident.Validate("agent", agentID); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if lifetime == 0 {
		lifetime = DefaultClientLifetime
	}
	if lifetime < MinClientLifetime || lifetime > MaxClientLifetime {
		return nil, fmt.Errorf("pki: client certificate lifetime %s: want %s to %s", lifetime, MinClientLifetime, MaxClientLifetime)
	}
	pub, err := ParseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	now := p.opts.Now()
	notAfter := now.Add(lifetime)
	if notAfter.After(p.issuer.NotAfter) {
		notAfter = p.issuer.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: agentID, Organization: []string{"Sutra Grid agents"}},
		URIs:                  []*url.URL{AgentURI(agentID)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.issuer, pub, p.key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue client certificate for %s: %w", agentID, err)
	}
	p.log.Info("client certificate issued", "agent", agentID, "expires", notAfter.UTC())
	return der, nil
}

// ParseCSR parses and checks a certificate signing request: its signature
// (proof that the requester holds the key) and the strength of its key,
// which it returns.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 || len(der) > maxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes (want 1 to %d of DER)", ErrBadCSR, len(der), maxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr.PublicKey, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s: use P-256", ErrBadCSR, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("%w: RSA key of %d bits: use 2048 to 8192 (or ECDSA P-256)", ErrBadCSR, n)
		}
		return nil
	}
	return fmt.Errorf("%w: unsupported key type %T: use ECDSA P-256", ErrBadCSR, pub)
}

// AgentURI is the identity URI of agent id: sutra://agent/<id>.
func AgentURI(id string) *url.URL { return mtls.AgentURI(id) }

// AgentIDFromCert returns the agent id a verified client certificate
// names: its only URI SAN sutra://agent/<id>, with a valid id equal to its
// common name (internal/mtls.AgentID). Call it only on a certificate the
// TLS handshake verified (tls.ConnectionState.VerifiedChains), never on an
// unverified one.
func AgentIDFromCert(cert *x509.Certificate) (string, error) { return mtls.AgentID(cert) }

// serial is a random 128-bit positive serial number.
func serial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] &= 0x7f
	b[0] |= 0x40 // at least 127 bits, never zero
	return new(big.Int).SetBytes(b[:])
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	certs, err := parseCertsPEM(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode key: %w", err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseKeyPEM(b)
}

// parseKeyPEM parses the first PEM block of b as a private key.
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	var (
		k   any
		err error
	)
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	return s, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// warnMode logs a key file readable by others (Unix), without changing it.
func (p *PKI) warnMode(path string) {
	if runtime.GOOS == "windows" {
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		p.log.Warn("key file is readable by other users: chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
	}
}
