package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/mtls"
)

// PortCheck is the result of checking one of the master's ports.
type PortCheck struct {
	// Name is "grpc" or "http".
	Name string `json:"name"`
	Addr string `json:"addr"`
	OK   bool   `json:"ok"`
	// Steps are what was done, in order ("dns ok", "tcp ok 1ms", …).
	Steps []string `json:"steps"`
	// Error says which step failed and why.
	Error string `json:"error,omitempty"`
	// ServerCA is the fingerprint of the CA that verified the master's
	// certificate (compare with the pinned one).
	ServerCA string `json:"server_ca_fingerprint,omitempty"`
}

// checkMaster checks both ports of every master listed (agent.master_host
// and storage.master_binary_url may list several), concurrently: the gRPC
// ports first, then the HTTP ones, each in the configured order.
func checkMaster(ctx context.Context, cfg *config.Config, id *identity, timeout time.Duration) []PortCheck {
	hosts := cfg.Agent.MasterHosts()
	if len(hosts) == 0 {
		hosts = []string{cfg.Agent.MasterHost} // invalid: checkGRPC says why
	}
	urls := cfg.Storage.MasterBinaryURLs()
	if len(urls) == 0 {
		urls = []string{cfg.Storage.MasterBinaryURL}
	}
	out := make([]PortCheck, len(hosts)+len(urls))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { out[i] = checkGRPC(ctx, h, id, timeout) })
	}
	for i, u := range urls {
		wg.Go(func() { out[len(hosts)+i] = checkHTTP(ctx, u, id, timeout) })
	}
	wg.Wait()
	return out
}

// tlsConfig is the agent's client TLS: the pinned CA only, its certificate.
func (id *identity) tlsConfig(serverName string) *tls.Config {
	c := mtls.ClientConfig(id.pool, id.cert)
	c.ServerName = serverName
	return c
}

func checkGRPC(ctx context.Context, addr string, id *identity, timeout time.Duration) PortCheck {
	pc := PortCheck{Name: "grpc", Addr: addr}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		pc.Error = fmt.Sprintf("agent.master_host %q is not host:port", addr)
		return pc
	}
	if !dnsStep(ctx, &pc, host, timeout) {
		return pc
	}
	d := net.Dialer{Timeout: timeout}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		pc.Error = "TCP connect: " + netReason(err, timeout)
		return pc
	}
	pc.Steps = append(pc.Steps, fmt.Sprintf("tcp connect ok (%s)", time.Since(start).Round(time.Millisecond)))
	if id.pool == nil || id.ca == nil {
		conn.Close()
		pc.Error = fmt.Sprintf("TLS: no pinned CA to verify the master with (%s: %v); the agent pins it when it enrolls with a join token", id.dir, id.caErr)
		return pc
	}
	raw := id.tlsConfig(host)
	raw.NextProtos = []string{"h2"} // as gRPC does; the master refuses other protocols
	tc := tls.Client(conn, raw)
	hctx, cancel := context.WithTimeout(ctx, timeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		conn.Close()
		pc.Error = "TLS: " + tlsReason(err, id)
		return pc
	}
	if chains := tc.ConnectionState().VerifiedChains; len(chains) > 0 {
		root := chains[0][len(chains[0])-1]
		pc.ServerCA = mtls.Fingerprint(root.Raw)
	}
	// With TLS 1.3 the master checks this agent's certificate after the
	// client's side of the handshake is done: its refusal (an alert, or
	// the connection closed) arrives on the first read. A master that
	// accepted sends its HTTP/2 settings, or nothing until the preface.
	_ = tc.SetReadDeadline(time.Now().Add(min(timeout, time.Second)))
	var one [1]byte
	_, rerr := tc.Read(one[:])
	tc.Close()
	if rerr != nil && !isTimeout(rerr) {
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, syscall.ECONNRESET) {
			pc.Error = "TLS: " + clientCertReason("the master closed the connection right after the handshake: "+rerr.Error(), id)
		} else {
			pc.Error = "TLS: " + tlsReason(rerr, id)
		}
		return pc
	}
	pc.Steps = append(pc.Steps, "tls handshake ok (master verified against the pinned CA "+pc.ServerCA+")")

	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(id.tlsConfig(host))))
	if err != nil {
		pc.Error = "gRPC: " + err.Error()
		return pc
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		pc.Error = rpcReason(err, id, timeout)
		return pc
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		pc.Error = "gRPC health: the master reports " + res.GetStatus().String()
		return pc
	}
	who := "without a client certificate"
	if id.cert != nil {
		who = "with this agent's certificate"
	}
	pc.Steps = append(pc.Steps, "grpc health check SERVING "+who)
	pc.OK = true
	return pc
}

func dnsStep(ctx context.Context, pc *PortCheck, host string, timeout time.Duration) bool {
	if net.ParseIP(host) != nil {
		return true
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(dctx, host)
	if err != nil {
		pc.Error = fmt.Sprintf("DNS: cannot resolve %q: %v", host, err)
		return false
	}
	pc.Steps = append(pc.Steps, fmt.Sprintf("dns %s -> %s", host, strings.Join(addrs, ", ")))
	return true
}

// netReason names a connect failure: connection refused, timeout, DNS.
func netReason(err error, timeout time.Duration) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (is sutra-master running and listening on this port? a firewall rejecting?)"
	case errors.As(err, &dnsErr):
		return "DNS: " + dnsErr.Error()
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		return fmt.Sprintf("timed out after %s (a firewall dropping packets, or the master is overloaded)", timeout)
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return "no route to host: " + err.Error()
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsReason names a TLS failure: unknown CA, expired, name mismatch, or
// the master refusing this agent's certificate.
func tlsReason(err error, id *identity) string {
	var ua x509.UnknownAuthorityError
	var inv x509.CertificateInvalidError
	var hn x509.HostnameError
	var alert tls.AlertError
	switch {
	case errors.As(err, &ua):
		return fmt.Sprintf("unknown CA: the master's certificate is not signed by the CA pinned in %s (fingerprint %s): another master, or its CA changed; re-enroll with a join token from this master (%v)",
			id.dir, id.caFP, err)
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "the master's certificate is expired or not yet valid (check both machines' clocks): " + err.Error()
	case errors.As(err, &inv):
		return "the master's certificate is invalid: " + err.Error()
	case errors.As(err, &hn):
		return "name mismatch: " + err.Error() + " (master_host must be a name or address in the master's certificate)"
	case errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:"):
		return clientCertReason(err.Error(), id)
	case isTimeout(err):
		return "handshake timed out (is this port a TLS server?)"
	}
	return err.Error()
}

// clientCertReason explains the master's refusal of this agent's certificate.
func clientCertReason(msg string, id *identity) string {
	if id.leaf != nil && time.Now().After(id.leaf.NotAfter) {
		return "the master refused this agent's certificate: it expired at " + id.leaf.NotAfter.UTC().Format(time.RFC3339) + " (expired certificate; " + msg + ")"
	}
	if strings.Contains(msg, "expired") {
		return "the master refused this agent's certificate as expired: " + msg
	}
	return "the master refused this agent's certificate (issued by another CA, or revoked?): " + msg
}

// rpcReason names a failed health check by its gRPC code.
func rpcReason(err error, id *identity, timeout time.Duration) string {
	st := status.Convert(err)
	msg := st.Message()
	switch st.Code() {
	case codes.PermissionDenied:
		if strings.Contains(msg, "revoked") {
			return "auth: this agent's certificate was revoked by an operator (PERMISSION_DENIED): " + msg
		}
		return "auth: PERMISSION_DENIED: " + msg
	case codes.Unauthenticated:
		return "auth: UNAUTHENTICATED: " + msg
	case codes.ResourceExhausted:
		return "rate limited by the master (RESOURCE_EXHAUSTED): " + msg
	case codes.DeadlineExceeded:
		return fmt.Sprintf("gRPC health check timed out after %s: %s", timeout, msg)
	case codes.Unavailable:
		if strings.Contains(msg, "tls:") || (id.leaf != nil && time.Now().After(id.leaf.NotAfter)) {
			return "TLS: " + clientCertReason(msg, id)
		}
		if strings.Contains(msg, "connection refused") {
			return "TCP connect: connection refused: " + msg
		}
		return "gRPC UNAVAILABLE: " + msg
	}
	return fmt.Sprintf("gRPC health check: %s: %s", st.Code(), msg)
}

// maxBody caps what the HTTP check reads of an answer.
const maxBody = 1 << 20

func checkHTTP(ctx context.Context, base string, id *identity, timeout time.Duration) PortCheck {
	pc := PortCheck{Name: "http", Addr: base}
	if base == "" {
		pc.OK = true
		pc.Steps = append(pc.Steps, "storage.master_binary_url is empty: not checked")
		return pc
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		pc.Error = fmt.Sprintf("storage.master_binary_url %q is not an http(s) URL", base)
		return pc
	}
	if !dnsStep(ctx, &pc, u.Hostname(), timeout) {
		return pc
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		TLSHandshakeTimeout: timeout,
		DisableKeepAlives:   true,
	}
	if u.Scheme == "https" && id.pool != nil {
		tr.TLSClientConfig = id.tlsConfig(u.Hostname())
		tr.TLSClientConfig.MinVersion = tls.VersionTLS12
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}
	target := strings.TrimRight(base, "/") + "/api/binaries"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		pc.Error = err.Error()
		return pc
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		inner := err
		if errors.As(err, &ue) {
			inner = ue.Err
		}
		var ua x509.UnknownAuthorityError
		var inv x509.CertificateInvalidError
		var hn x509.HostnameError
		switch {
		case errors.As(inner, &ua) || errors.As(inner, &inv) || errors.As(inner, &hn) || strings.Contains(inner.Error(), "tls:"):
			pc.Error = "TLS: " + tlsReason(inner, id)
		default:
			pc.Error = "GET " + target + ": " + netReason(inner, timeout)
		}
		return pc
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	snippet := strings.TrimSpace(string(body))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case resp.StatusCode == http.StatusOK:
		pc.OK = true
		pc.Steps = append(pc.Steps, fmt.Sprintf("GET %s: 200 OK (%s, %d bytes)", target, took, len(body)))
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		pc.Error = fmt.Sprintf("auth: GET %s: %s: %s", target, resp.Status, snippet)
	case resp.StatusCode == http.StatusTooManyRequests:
		pc.Error = fmt.Sprintf("rate limited: GET %s: %s (Retry-After %q)", target, resp.Status, resp.Header.Get("Retry-After"))
	case resp.StatusCode == http.StatusBadRequest && u.Scheme == "http" && strings.Contains(snippet, "HTTPS server"):
		pc.Error = fmt.Sprintf("GET %s: the master serves HTTPS on this port (--http-tls): use https:// in storage.master_binary_url", target)
	default:
		pc.Error = fmt.Sprintf("GET %s: %s: %s", target, resp.Status, snippet)
	}
	return pc
}
