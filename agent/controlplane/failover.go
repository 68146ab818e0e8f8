package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/masters"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Several masters (issue 16). Options.MasterAddr may list several masters
// (and a name may resolve to several addresses); internal/masters picks
// the one in use: at random at the start, kept while it works (sticky),
// and on a failure that means the master is gone — UNAVAILABLE (refused
// connection, TLS handshake cut, server stopped) or DEADLINE_EXCEEDED —
// another one at random among the others, after that one's own
// full-jitter backoff. Application errors (INVALID_ARGUMENT,
// PERMISSION_DENIED for a revoked certificate, RESOURCE_EXHAUSTED rate
// limits, ALREADY_EXISTS) keep the master: another master would answer the
// same. After moving, the agent registers with the new master (which reads
// the agent's desired state from the shared store) and re-sends its nodes'
// statuses. One grpc.ClientConn is open at a time, to the current master;
// it dials the endpoint's address but checks the master's certificate
// against the configured host name.

// resolveTimeout bounds one re-resolution of the master names.
const resolveTimeout = 2 * time.Second

// masterGone reports whether err means the master cannot be reached (as
// opposed to an answer from a working master).
func masterGone(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// Master returns the configured host:port of the master in use (the same
// for every address its name resolves to).
func (c *Client) Master() string {
	return c.set.Current().Host
}

// master names the endpoint in use for logs.
func (c *Client) master() string {
	return c.set.Current().String()
}

// dial opens the connection to the current master (lazily: grpc connects
// on the first call) and closes the previous one.
func (c *Client) dial() error {
	ep := c.set.Current()
	dialer := &net.Dialer{Timeout: c.opts.RPCTimeout, KeepAlive: 30 * time.Second}
	c.mu.Lock()
	cfg := c.tlsConfig
	c.mu.Unlock()
	// passthrough: the target is the configured host:port as is (the
	// authority, hence the TLS server name); the dialer goes to the
	// endpoint's address.
	conn, err := grpc.NewClient("passthrough:///"+ep.Host,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", ep.Addr)
		}))
	if err != nil {
		return fmt.Errorf("controlplane: master address %q: %w", ep.Host, err)
	}
	c.mu.Lock()
	old := c.conn
	c.conn, c.rpc = conn, gridv1.NewGridMasterClient(conn)
	c.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// client is the RPC client of the current connection.
func (c *Client) client() gridv1.GridMasterClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rpc
}

// refresh re-resolves the master names (bounded by resolveTimeout).
func (c *Client) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	lookup := c.opts.Resolver
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	c.set.Refresh(func(host string) ([]string, error) { return lookup(ctx, host) })
}

// failover moves to another master when err means the current one is
// gone and another is listed: it logs one line, reconnects and returns how
// long to wait before calling the new master. moved is false when the
// agent stays (an application error, or a single master: the caller's
// usual retry applies).
func (c *Client) failover(ctx context.Context, err error) (wait time.Duration, moved bool) {
	if !masterGone(err) || ctx.Err() != nil {
		return 0, false
	}
	from := c.set.Current()
	c.refresh(ctx)
	if c.set.Len() < 2 {
		return 0, false
	}
	to, wait := c.set.Failed(from)
	if to == from {
		return 0, false
	}
	// One warning per failover; while every master is down, every 10th
	// move is enough.
	level := slog.LevelWarn
	if c.moves++; c.moves > 1 && c.moves%10 != 1 {
		level = slog.LevelDebug
	}
	c.opts.Logger.Log(ctx, level, "master unreachable; moving to another master", "from", from.String(), "to", to.String(),
		"retry_in", wait.Round(time.Millisecond), "agent", c.opts.AgentID, "err", err)
	if derr := c.dial(); derr != nil {
		c.opts.Logger.Error("cannot connect to the next master", "master", to.String(), "err", derr)
	}
	return wait, true
}

// tlsConfigFor is what connect stores for dial: cfg with the certificate
// chosen per handshake (renewal replaces it).
func (c *Client) tlsConfigFor(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	cfg.Certificates = nil
	cfg.GetClientCertificate = c.clientCert
	return cfg
}

// newMasterSet parses MasterAddr into the set of masters.
func newMasterSet(o Options) (*masters.Set, error) {
	hosts, err := masters.ParseHosts(o.MasterAddr)
	if err != nil {
		return nil, fmt.Errorf("controlplane: MasterAddr %.200q %w", o.MasterAddr, err)
	}
	return masters.New(masters.Options{Hosts: hosts, BackoffMin: o.BackoffMin, BackoffMax: o.BackoffMax, Seed: o.Rand.Uint64() | 1})
}
