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
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/release"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
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
var ErrNoCredentials = errors.New("this agent has no certificate and no join token: create a token with 'sutra tokens create' on the master and pass it with --join-token, SUTRA_JOIN_TOKEN or join_token in agent-config.toml (as a service: sutra-agent service install --join-token-file FILE)")

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
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		// A renewal interrupted between its two renames leaves the new key
		// beside the old certificate: the new certificate is still in
		// agent.crt.next; finish the renewal.
		if next, nerr := tls.LoadX509KeyPair(certPath+nextSuffix, keyPath); nerr == nil {
			if rerr := os.Rename(certPath+nextSuffix, certPath); rerr == nil {
				_ = atomicfile.SyncDir(dir)
				cert, err = next, nil
			}
		}
	}
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
			if err == nil {
				c.forgetJoinTokenFile()
			}
			return cfg, err
		}
		if errors.Is(err, mtls.ErrPinMismatch) || errors.Is(err, enroll.ErrRefused) {
			return nil, err
		}
		from := c.master()
		delay := c.retryDelay(err, c.backoff(attempt))
		if masterGone(err) && c.set.Len() > 1 {
			// Try the masters in turn (each with its own backoff).
			_, delay = c.set.Failed(c.set.Current())
		}
		if errors.Is(err, enroll.ErrIDInUse) {
			// Like a refused registration: nothing changes until the other
			// machine is gone or an operator acts, so say it on every attempt.
			c.opts.Logger.Error("master refused enrollment: another agent instance holds this agent_id; set a unique agent_id in agent-config.toml (retrying)",
				"master", from, "agent", c.opts.AgentID, "attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "err", err)
		} else {
			c.opts.Logger.Warn("cannot enroll with master yet; retrying", "master", from, "next", c.master(), "token", tok, "attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "err", err)
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
		Addr: c.set.Current().Host, Token: tok, AgentID: c.opts.AgentID,
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
	c.opts.Logger.Info("enrolled with master", "master", c.master(), "agent", c.opts.AgentID, "token", tok, "dir", dir)
	c.storeReleaseKeys(res.ReleasePublicKeys)
	return nil
}

// ReleaseKeysFile, in TLSDir, holds the release public keys the master
// handed out at the agent's first enrollment (one per line, 0644). The
// agent uses them only when its config pins no
// security.release_public_keys (agent/config Security.EffectiveKeys), and
// never replaces the file afterwards: a later enrollment (possibly with a
// compromised master) cannot swap the keys.
const ReleaseKeysFile = "release-public-keys.txt"

// storeReleaseKeys keeps the keys of a first enrollment. Invalid keys are
// logged and not stored (the enrollment itself stands).
func (c *Client) storeReleaseKeys(keys []string) {
	if len(keys) == 0 {
		return
	}
	path := filepath.Join(c.opts.TLSDir, ReleaseKeysFile)
	if _, err := os.Lstat(path); err == nil {
		c.opts.Logger.Info("release public keys from the master ignored: keys from a first enrollment are kept", "path", path)
		return
	}
	kr, err := release.ParseKeys(keys)
	if err != nil {
		c.opts.Logger.Error("release public keys from the master refused", "err", err)
		return
	}
	if err := atomicfile.Write(path, []byte(strings.Join(keys, "\n")+"\n"), 0o644); err != nil {
		c.opts.Logger.Error("store the release public keys from the master", "path", path, "err", err)
		return
	}
	c.opts.Logger.Info("stored the release public keys from the master (used when the config pins none, from the next start)",
		"path", path, "keys", strings.Join(kr.IDs(), ","))
}

// Renewal. The agent renews its certificate over its mutual-TLS connection
// (RenewCertificate: a CSR for a new key, no token) once two thirds of its
// lifetime have passed, plus up to a tenth of it as jitter so a fleet
// enrolled at once does not renew at once (client-go's certificate manager
// rotates at 70–90 %). A failed renewal is retried a minute later; an agent
// whose certificate expired while it was off enrolls again with a new token.
//
// The new key and certificate are written as agent.key.next and
// agent.crt.next, then renamed over agent.key and agent.crt in that order;
// loadCredentials completes a renewal cut between the two renames, so a
// crash at any point leaves a usable pair.
const nextSuffix = ".next"

// renewRetry is how long a failed renewal waits before the next attempt.
const renewRetry = time.Minute

// renewAt is when the certificate leaf should be renewed.
func (c *Client) renewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	jitter := time.Duration(c.opts.Rand.Int64N(int64(life/10) + 1))
	return leaf.NotBefore.Add(life*2/3 + jitter)
}

// setCert makes cert the one new handshakes present and schedules its renewal.
func (c *Client) setCert(cert *tls.Certificate, leaf *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert = cert
	c.renewDue = c.renewAt(leaf)
}

// clientCert is tls.Config.GetClientCertificate: the current certificate.
func (c *Client) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, nil
}

// maybeRenew renews the certificate when it is due.
func (c *Client) maybeRenew(ctx context.Context) {
	c.mu.Lock()
	due := !c.renewDue.IsZero() && !time.Now().Before(c.renewDue)
	c.mu.Unlock()
	if !due {
		return
	}
	if err := c.renew(ctx); err != nil {
		retry := c.retryDelay(err, renewRetry)
		c.opts.Logger.Warn("certificate renewal failed; retrying", "master", c.master(), "retry_in", retry.Round(time.Millisecond), "err", err)
		c.mu.Lock()
		c.renewDue = time.Now().Add(retry)
		c.mu.Unlock()
	}
}

func (c *Client) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RPCTimeout)
	defer cancel()
	key, err := mtls.NewKey()
	if err != nil {
		return err
	}
	csr, err := mtls.NewCSR(key, c.opts.AgentID)
	if err != nil {
		return err
	}
	resp, err := c.client().RenewCertificate(ctx, &gridv1.RenewCertificateRequest{AgentId: c.opts.AgentID, CsrDer: csr})
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if len(resp.GetCertChainDer()) == 0 {
		return errors.New("renew: the master answered no certificate")
	}
	leaf, err := x509.ParseCertificate(resp.GetCertChainDer()[0])
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, der := range resp.GetCertChainDer() {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	dir := c.opts.TLSDir
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	if err := atomicfile.Write(keyPath+nextSuffix, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("store renewed certificate: %w", err)
	}
	if err := atomicfile.Write(certPath+nextSuffix, certPEM, 0o600); err != nil {
		return fmt.Errorf("store renewed certificate: %w", err)
	}
	if err := os.Rename(keyPath+nextSuffix, keyPath); err != nil {
		return fmt.Errorf("store renewed certificate: %w", err)
	}
	if err := os.Rename(certPath+nextSuffix, certPath); err != nil {
		return fmt.Errorf("store renewed certificate: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("store renewed certificate: %w", err)
	}
	c.setCert(&tls.Certificate{Certificate: resp.GetCertChainDer(), PrivateKey: key, Leaf: leaf}, leaf)
	c.opts.Logger.Info("certificate renewed", "agent", c.opts.AgentID, "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
