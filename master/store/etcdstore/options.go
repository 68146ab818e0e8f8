package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/smallfile"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Limits and defaults of the backend.
const (
	// DefaultMaxTxnOps is etcd's default --max-txn-ops: the most distinct
	// keys one batch may write (and the most conditions it may carry).
	DefaultMaxTxnOps = 128
	// MaxTxnBytes is etcd's default --max-request-bytes (1.5 MiB): a batch
	// whose keys and values add up to more is refused with ErrInvalidOp.
	MaxTxnBytes = 3 << 19
	// DefaultDialTimeout and DefaultRequestTimeout bound connecting and
	// each request (a Txn, a page of a Scan, a Get).
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	// MaxEndpoints is how many endpoints ParseEndpoints accepts.
	MaxEndpoints = 16
)

// Options configure Open. The zero value of every field but Endpoints (or
// Client) is a useful default.
type Options struct {
	// Endpoints are the etcd client URLs (see ParseEndpoints).
	Endpoints []string
	// TLS is the client TLS for https endpoints (see LoadTLS); nil with
	// https endpoints verifies the servers against the system roots.
	TLS *tls.Config
	// Prefix is where the grid's keys live in etcd (DefaultPrefix when
	// empty; see ValidatePrefix).
	Prefix string
	// DialTimeout bounds the first connection (DefaultDialTimeout).
	DialTimeout time.Duration
	// RequestTimeout bounds each request to etcd (DefaultRequestTimeout),
	// within the caller's context.
	RequestTimeout time.Duration
	// MaxTxnOps is the etcd cluster's --max-txn-ops (DefaultMaxTxnOps): a
	// batch writing more distinct keys is refused with ErrInvalidOp
	// before it reaches etcd.
	MaxTxnOps int
	// Logger receives one line per event (nil: discard).
	Logger *slog.Logger
	// Username and Password authenticate to etcd when set (etcd auth);
	// they are sent only over https or to a loopback address.
	Username, Password string
	// Client, when set, is used instead of dialing Endpoints; the Store
	// does not close it. (Tests and callers that already hold a client.)
	Client *clientv3.Client
}

func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem of the options at once (Open calls it).
func (o *Options) Validate() error {
	var errs []error
	if o.Prefix != "" { // empty: DefaultPrefix
		if err := ValidatePrefix(o.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Client == nil {
		if len(o.Endpoints) == 0 {
			errs = append(errs, errors.New("etcd: no endpoints (--etcd-endpoints)"))
		}
		if _, err := ParseEndpoints(strings.Join(o.Endpoints, ",")); len(o.Endpoints) > 0 && err != nil {
			errs = append(errs, err)
		}
		if o.Username != "" || o.Password != "" {
			if o.Username == "" {
				errs = append(errs, errors.New("etcd: a password without a username"))
			}
			for _, ep := range o.Endpoints {
				if !secureEndpoint(ep) {
					errs = append(errs, fmt.Errorf("etcd: username and password would cross the network in clear to %s: use https endpoints", ep))
				}
			}
		}
	}
	if o.MaxTxnOps > 1<<20 {
		errs = append(errs, fmt.Errorf("etcd: max txn ops %d is more than %d", o.MaxTxnOps, 1<<20))
	}
	return errors.Join(errs...)
}

// secureEndpoint: https, or http to a loopback address.
func secureEndpoint(ep string) bool {
	u, err := url.Parse(ep)
	if err != nil {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// ParseEndpoints parses --etcd-endpoints: a comma-separated list of at
// most MaxEndpoints client URLs, each scheme://host:port with scheme http
// or https (all the same), nothing else (no path, user, query), no
// duplicates; spaces around entries are trimmed. It returns them in the
// order given, scheme and host lower-cased.
func ParseEndpoints(s string) ([]string, error) {
	if len(s) > MaxEndpoints*300 {
		return nil, fmt.Errorf("etcd endpoints: %d bytes is too long", len(s))
	}
	parts := strings.Split(s, ",")
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("etcd endpoints: empty (want https://host:2379,...)")
	}
	if len(parts) > MaxEndpoints {
		return nil, fmt.Errorf("etcd endpoints: %d of them, at most %d", len(parts), MaxEndpoints)
	}
	var out []string
	seen := map[string]bool{}
	scheme := ""
	for i, p := range parts {
		p = strings.TrimSpace(p)
		ep, err := parseEndpoint(p)
		if err != nil {
			return nil, fmt.Errorf("etcd endpoint %d %q: %w", i+1, p, err)
		}
		u, _ := url.Parse(ep)
		if scheme == "" {
			scheme = u.Scheme
		} else if u.Scheme != scheme {
			return nil, fmt.Errorf("etcd endpoints: %q mixes %s and %s (use one scheme)", p, scheme, u.Scheme)
		}
		if seen[ep] {
			return nil, fmt.Errorf("etcd endpoints: %s given twice", ep)
		}
		seen[ep] = true
		out = append(out, ep)
	}
	return out, nil
}

func parseEndpoint(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty")
	}
	if len(p) > 300 {
		return "", errors.New("longer than 300 bytes")
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c >= 0x7f {
			return "", errors.New("only printable ASCII without spaces")
		}
	}
	u, err := url.Parse(p)
	if err != nil {
		return "", fmt.Errorf("not a URL: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("scheme must be http:// or https://")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") || strings.Contains(p, "#") || strings.Contains(p, "?") {
		return "", errors.New("want scheme://host:port and nothing else")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return "", errors.New("empty host")
	}
	if strings.ContainsAny(host, "%/[]@") {
		return "", fmt.Errorf("host %q is not a host name or IP address", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", fmt.Errorf("port %q is not 1..65535", port)
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(host), port), nil
}

// maxPEM caps what LoadTLS reads from one file.
const maxPEM = 1 << 20

// LoadTLS builds the client TLS of the etcd connection: certFile and
// keyFile (both or neither) are the client certificate etcd's
// --client-cert-auth checks; caFile verifies the servers (empty: the
// system roots). Every argument may be empty (CA only: server
// verification without a client certificate). TLS 1.2 at least.
func LoadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case (certFile == "") != (keyFile == ""):
		return nil, fmt.Errorf("etcd TLS: a client certificate needs both --etcd-cert (%q) and --etcd-key (%q)", certFile, keyFile)
	case certFile != "":
		certPEM, err := readPEM(certFile)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readPEM(keyFile)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: client certificate %s with key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		caPEM, err := readPEM(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("etcd TLS: %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func readPEM(path string) ([]byte, error) {
	b, err := smallfile.Read(path, maxPEM)
	if err != nil {
		return nil, fmt.Errorf("etcd TLS: %w", err)
	}
	return b, nil
}
