package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/mtls"
)

// Enrollment (issue 12). The agent's identity is a client certificate
// issued by the master's CA; it lives in TLSDir ({agent_data_dir}/tls):
// agent.key (made here, never sent anywhere), agent.crt and ca.crt (the CA
// the agent trusts the master by, and nothing else), all 0600. Without them
// the agent enrolls with a join token SUTRA1.<CA fingerprint>.<id>.<secret>:
// it fetches the master's CA bundle over TLS without verifying the server
// (it has no trust anchor yet), accepts the bundle only if its first
// certificate has the token's fingerprint — a different master or a man in
// the middle is refused here, naming both fingerprints, before the secret
// has left the machine — then sends the secret, a CSR for a key made
// locally, its agent id and hostname in Enroll over a connection verified
// against that CA, and stores what it gets back. From then on the token is
// not needed.
const (
	KeyFile  = "agent.key"
	CertFile = "agent.crt"
	CAFile   = "ca.crt"
)

// ErrNoCredentials: neither a certificate in TLSDir nor a join token.
var ErrNoCredentials = errors.New("this agent has no certificate and no join token: create a token with 'sutra tokens create' on the master and pass it with --join-token, SUTRA_JOIN_TOKEN or join_token in agent-config.toml")

// hasCredentials reports whether dir holds the three files of an identity.
func hasCredentials(dir string) bool {
	for _, f := range []string{KeyFile, CertFile, CAFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// loadCredentials reads the identity in dir into a client TLS config.
func loadCredentials(dir string) (*tls.Config, *x509.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load agent certificate: %w (remove %s and enroll again with a new join token)", err, dir)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load master CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("load master CA: %s holds no certificate (remove %s and enroll again with a new join token)", filepath.Join(dir, CAFile), dir)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("load agent certificate: %w", err)
	}
	return mtls.ClientConfig(roots, &cert), leaf, nil
}

// credentials returns the agent's TLS config, enrolling first when it has
// no certificate yet. An unreachable master is retried with backoff until
// ctx ends; a refusal or a pin mismatch is returned.
func (c *Client) credentials(ctx context.Context) (*tls.Config, error) {
	dir := c.opts.TLSDir
	if hasCredentials(dir) {
		cfg, leaf, err := loadCredentials(dir)
		if err != nil {
			return nil, err
		}
		if now := time.Now(); now.After(leaf.NotAfter) && c.opts.JoinToken == "" {
			return nil, fmt.Errorf("the agent certificate in %s expired at %s: remove %s and start the agent with a new join token (sutra tokens create on the master)", dir, leaf.NotAfter.UTC().Format(time.RFC3339), dir)
		} else if !now.After(leaf.NotAfter) {
			return cfg, nil
		}
		c.opts.Logger.Warn("agent certificate expired: enrolling again with the join token", "dir", dir, "expired", leaf.NotAfter)
	}
	if c.opts.JoinToken == "" {
		return nil, ErrNoCredentials
	}
	tok, err := jointoken.Parse(c.opts.JoinToken)
	if err != nil {
		return nil, fmt.Errorf("join token: %w", err)
	}
	for attempt := 0; ; attempt++ {
		err := c.enroll(ctx, tok)
		if err == nil {
			cfg, _, err := loadCredentials(dir)
			return cfg, err
		}
		if errors.Is(err, mtls.ErrPinMismatch) || errors.Is(err, enroll.ErrRefused) {
			return nil, err
		}
		delay := c.backoff(attempt)
		if errors.Is(err, enroll.ErrIDInUse) {
			// Like a refused registration: nothing changes until the other
			// machine is gone or an operator acts, so say it on every attempt.
			c.opts.Logger.Error("master refused enrollment: another agent instance holds this agent_id; set a unique agent_id in agent-config.toml (retrying)",
				"master", c.opts.MasterAddr, "agent", c.opts.AgentID, "attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "err", err)
		} else {
			c.opts.Logger.Warn("cannot enroll with master yet; retrying", "master", c.opts.MasterAddr, "token", tok, "attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// enroll runs one enrollment (internal/enroll) and stores the identity in
// TLSDir.
func (c *Client) enroll(ctx context.Context, tok jointoken.Token) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RPCTimeout)
	defer cancel()
	key, err := mtls.NewKey()
	if err != nil {
		return err
	}
	res, err := enroll.Enroll(ctx, enroll.Request{
		Addr: c.opts.MasterAddr, Token: tok, AgentID: c.opts.AgentID,
		Hostname: limits.ClipText(c.opts.Hostname, limits.MaxTextLen), Key: key,
	})
	if err != nil {
		return err
	}
	// Store: key and certificate first, ca.crt last (hasCredentials
	// needs all three, so a crash in between means enrolling again).
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, der := range res.CertChain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	dir := c.opts.TLSDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store agent certificate: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{CertFile, certPEM},
		{CAFile, res.CAPEM},
	} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return fmt.Errorf("store agent certificate: %w", err)
		}
	}
	c.opts.Logger.Info("enrolled with master", "master", c.opts.MasterAddr, "agent", c.opts.AgentID, "token", tok, "dir", dir)
	return nil
}
