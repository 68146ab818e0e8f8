package fetch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// HTTPS to the master (sutra-master --http-tls). With Options.TLSDir set
// (the agent's {agent_data_dir}/tls, where enrollment stores ca.crt,
// agent.crt and agent.key), an https master_binary_url is verified against
// the CA the agent pinned at enrollment (TLSDir/ca.crt) and nothing else,
// never the system roots, and the agent presents its client certificate so
// that a master with --private-downloads lets it download. The files are
// read again when they change: the certificate is renewed at two thirds of
// its lifetime and new connections present the renewed one. Before
// enrollment (no ca.crt yet) an https URL is verified against the system
// roots, as any https client would, and no certificate is presented.
// Without TLSDir the transport is the plain one (system roots).
const (
	tlsCAFile   = "ca.crt"
	tlsCertFile = "agent.crt"
	tlsKeyFile  = "agent.key"
)

// stamp identifies one version of a file.
type stamp struct {
	size int64
	mod  time.Time
}

func statStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

// agentTransport is the RoundTripper of a Fetcher with a TLSDir: plain
// requests go through base; https ones through a clone of base trusting
// the pinned CA, rebuilt when ca.crt changes.
type agentTransport struct {
	dir  string
	base *http.Transport

	mu      sync.Mutex
	caStamp stamp           // of ca.crt when pinned was built
	crStamp stamp           // of agent.crt when pinned was built
	pinned  *http.Transport // nil until ca.crt was read

	certMu    sync.Mutex
	certStamp stamp
	cert      *tls.Certificate
}

func newAgentTransport(dir string, base *http.Transport) *agentTransport {
	return &agentTransport{dir: dir, base: base}
}

// RoundTrip implements http.RoundTripper.
func (t *agentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return t.base.RoundTrip(req)
	}
	tr, err := t.transport()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return tr.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach both.
func (t *agentTransport) CloseIdleConnections() {
	t.base.CloseIdleConnections()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pinned != nil {
		t.pinned.CloseIdleConnections()
	}
}

// transport returns the https transport for the current ca.crt. It is
// built again when ca.crt or agent.crt changed (a renewal): its connections
// and TLS sessions, which would resume with the old certificate, go with
// the old one.
func (t *agentTransport) transport() (*http.Transport, error) {
	caPath := filepath.Join(t.dir, tlsCAFile)
	st, err := statStamp(caPath)
	cr, _ := statStamp(filepath.Join(t.dir, tlsCertFile))
	t.mu.Lock()
	defer t.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		// Not enrolled yet: no pin to hold the server to.
		return t.base, nil
	}
	if err != nil {
		return nil, fmt.Errorf("master CA %s: %w", caPath, err)
	}
	if t.pinned != nil && st == t.caStamp && cr == t.crStamp {
		return t.pinned, nil
	}
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("master CA %s: %w", caPath, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("master CA %s holds no PEM certificate (remove %s and enroll again with a new join token)", caPath, t.dir)
	}
	tr := t.base.Clone()
	tr.TLSClientConfig = &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              roots,
		GetClientCertificate: t.clientCert,
		ClientSessionCache:   tls.NewLRUClientSessionCache(4),
	}
	if t.pinned != nil {
		t.pinned.CloseIdleConnections()
	}
	t.pinned, t.caStamp, t.crStamp = tr, st, cr
	return tr, nil
}

// clientCert is tls.Config.GetClientCertificate: the agent's current
// certificate, read again when agent.crt changed. Without one (not enrolled,
// or a pair that does not load) it presents none; the master then answers
// 401 if its downloads are private.
func (t *agentTransport) clientCert(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	certPath, keyPath := filepath.Join(t.dir, tlsCertFile), filepath.Join(t.dir, tlsKeyFile)
	t.certMu.Lock()
	defer t.certMu.Unlock()
	if st, err := statStamp(certPath); err == nil && (t.cert == nil || st != t.certStamp) {
		// A renewal renames the key first, then the certificate: once
		// agent.crt changed, agent.key is the new one. A pair caught in
		// between does not load; the last good one is kept.
		if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
			t.cert, t.certStamp = &c, st
		}
	}
	if t.cert == nil || cri.SupportsCertificate(t.cert) != nil {
		return &tls.Certificate{}, nil
	}
	return t.cert, nil
}

// httpsHint explains an answer that shows the scheme is wrong: a plain
// request to a master that serves HTTPS (--http-tls).
func httpsHint(status int, body []byte) string {
	if status == http.StatusBadRequest && strings.Contains(strings.ToLower(string(body)), "http request to an https server") {
		return ": the master serves HTTPS on this port (sutra-master --http-tls): set storage.master_binary_url to https://…"
	}
	return ""
}
