package diagnose

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
)

const (
	keyFile       = controlplane.KeyFile
	certFile      = controlplane.CertFile
	caFile        = controlplane.CAFile
	joinTokenFile = controlplane.JoinTokenFile
)

// identity is the agent's TLS material as found in {agent_data_dir}/tls.
type identity struct {
	dir    string
	ca     *x509.Certificate
	pool   *x509.CertPool
	caFP   string
	caErr  error
	cert   *tls.Certificate // nil when absent or unusable
	leaf   *x509.Certificate
	crtErr error // reading or parsing agent.crt / agent.key
	absent bool  // agent.crt does not exist
}

// loadIdentity reads the CA and the key pair without blocking; the key is
// kept only in the tls.Certificate used for the handshake.
func loadIdentity(dir string) *identity {
	id := &identity{dir: dir}
	caPEM, err := readSmall(filepath.Join(dir, caFile), mtls.MaxBundleSize)
	if err == nil {
		id.pool = x509.NewCertPool()
		if b, _ := pem.Decode(caPEM); b == nil || b.Type != "CERTIFICATE" {
			id.caErr = fmt.Errorf("%s holds no PEM certificate", filepath.Join(dir, caFile))
		} else if c, perr := x509.ParseCertificate(b.Bytes); perr != nil {
			id.caErr = fmt.Errorf("%s: %w", filepath.Join(dir, caFile), perr)
		} else {
			id.ca, id.caFP = c, mtls.Fingerprint(c.Raw)
			id.pool.AddCert(c)
		}
	} else {
		id.caErr = err
	}
	crt, err := readSmall(filepath.Join(dir, certFile), 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		id.absent = true
		return id
	}
	if err != nil {
		id.crtErr = err
		return id
	}
	if b, _ := pem.Decode(crt); b != nil && b.Type == "CERTIFICATE" {
		id.leaf, _ = x509.ParseCertificate(b.Bytes)
	}
	if id.leaf == nil {
		id.crtErr = fmt.Errorf("%s holds no parsable certificate", filepath.Join(dir, certFile))
		return id
	}
	key, err := readSmall(filepath.Join(dir, keyFile), 64<<10)
	if err != nil {
		// Never quote the key file's content; the path and cause suffice.
		id.crtErr = fmt.Errorf("private key: %w", err)
		return id
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		id.crtErr = errors.New("agent.crt and agent.key do not form a key pair (a renewal cut short?): " + keyPairReason(err))
		return id
	}
	id.cert = &pair
	return id
}

// keyPairReason keeps the cause of a key pair error without any key bytes
// (crypto/tls errors never quote them; clip defensively anyway).
func keyPairReason(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// CertReport is the agent certificate's state.
type CertReport struct {
	Dir          string    `json:"dir"`
	Present      bool      `json:"present"`
	Subject      string    `json:"subject,omitempty"`
	URIs         []string  `json:"uri_sans,omitempty"`
	DNSNames     []string  `json:"dns_sans,omitempty"`
	Serial       string    `json:"serial,omitempty"`
	NotBefore    time.Time `json:"not_before,omitzero"`
	NotAfter     time.Time `json:"not_after,omitzero"`
	TimeLeft     string    `json:"time_left,omitempty"`
	RenewalDue   time.Time `json:"renewal_due,omitzero"`
	KeyMode      string    `json:"key_mode,omitempty"`
	CAFile       string    `json:"ca_file"`
	CASubject    string    `json:"ca_subject,omitempty"`
	CAFP         string    `json:"ca_fingerprint,omitempty"`
	CANotAfter   time.Time `json:"ca_not_after,omitzero"`
	IssuedByCA   bool      `json:"issued_by_pinned_ca"`
	TokenPin     string    `json:"join_token_pin,omitempty"`
	JoinToken    string    `json:"join_token"` // "set" / "file" / "none", never the value
	Error        string    `json:"error,omitempty"`
	RenewOverdue bool      `json:"renewal_overdue,omitempty"`
}

func certReport(r *Report, cfg *config.Config, id *identity, now time.Time) CertReport {
	c := CertReport{Dir: id.dir, CAFile: filepath.Join(id.dir, caFile), JoinToken: "none"}
	token := cfg.Agent.JoinToken
	if token != "" {
		c.JoinToken = "set (config or " + config.EnvJoinToken + ")"
	} else if b, err := readSmall(filepath.Join(cfg.Agent.AgentDataDir, joinTokenFile), 4096); err == nil {
		token = strings.TrimSpace(string(b))
		c.JoinToken = "file " + filepath.Join(cfg.Agent.AgentDataDir, joinTokenFile)
	} else if exists(filepath.Join(cfg.Agent.AgentDataDir, joinTokenFile)) {
		r.problem("join token file %s: %v", filepath.Join(cfg.Agent.AgentDataDir, joinTokenFile), err)
	}
	if token != "" {
		if tok, err := jointoken.Parse(token); err != nil {
			r.problem("the join token does not parse (copy the whole token 'sutra tokens create' printed)")
		} else {
			c.TokenPin = tok.Fingerprint
		}
	}
	if id.ca != nil {
		c.CASubject, c.CAFP, c.CANotAfter = id.ca.Subject.String(), id.caFP, id.ca.NotAfter
		if now.After(id.ca.NotAfter) {
			r.problem("the pinned master CA in %s expired at %s", c.CAFile, id.ca.NotAfter.UTC().Format(time.RFC3339))
		}
		if c.TokenPin != "" && c.TokenPin != c.CAFP {
			r.warn("the join token pins CA %s but %s is %s (the token is for another master, or the master's CA changed)", c.TokenPin, c.CAFile, c.CAFP)
		}
	}
	switch {
	case id.absent && token == "":
		c.Error = controlplane.ErrNoCredentials.Error()
		r.problem("%s", c.Error)
		return c
	case id.absent:
		c.Error = "not enrolled yet: the agent enrolls with its join token when it starts"
		r.warn("%s", c.Error)
		return c
	case id.leaf == nil:
		c.Error = id.crtErr.Error()
		r.problem("agent certificate: %s", c.Error)
		return c
	}
	if id.caErr != nil {
		r.problem("pinned master CA: %v (remove %s and enroll again with a new join token)", id.caErr, id.dir)
	}
	c.Present = true
	leaf := id.leaf
	c.Subject = leaf.Subject.String()
	for _, u := range leaf.URIs {
		c.URIs = append(c.URIs, u.String())
	}
	c.DNSNames = leaf.DNSNames
	c.Serial = leaf.SerialNumber.Text(16)
	c.NotBefore, c.NotAfter = leaf.NotBefore, leaf.NotAfter
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	c.RenewalDue = leaf.NotBefore.Add(life * 2 / 3)
	left := leaf.NotAfter.Sub(now)
	c.TimeLeft = left.Round(time.Second).String() + " left"
	if fi, err := os.Lstat(filepath.Join(id.dir, keyFile)); err == nil {
		c.KeyMode = fi.Mode().Perm().String()
		if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
			r.problem("the agent's private key %s is readable by others (mode %s): chmod 600 it", filepath.Join(id.dir, keyFile), c.KeyMode)
		}
	}
	if id.crtErr != nil {
		c.Error = id.crtErr.Error()
		r.problem("agent certificate: %s", c.Error)
	}
	if id.ca != nil {
		// The signature only: validity times are checked below.
		err := leaf.CheckSignatureFrom(id.ca)
		c.IssuedByCA = err == nil
		if err != nil {
			r.problem("the agent certificate was not issued by the pinned CA %s: %v (remove %s and enroll again with a new join token)", c.CAFP, err, id.dir)
		}
	}
	switch {
	case now.After(leaf.NotAfter):
		c.TimeLeft = "expired " + (-left).Round(time.Second).String() + " ago"
		r.problem("the agent certificate expired at %s: remove %s and start the agent with a new join token (sutra tokens create on the master)",
			leaf.NotAfter.UTC().Format(time.RFC3339), id.dir)
	case now.Before(leaf.NotBefore):
		r.problem("the agent certificate is not valid before %s: is this machine's clock right?", leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(c.RenewalDue.Add(life / 10)):
		c.RenewOverdue = true
		r.warn("the agent certificate was due for renewal at %s and is not renewed yet (the running agent renews it over its connection to the master)",
			c.RenewalDue.UTC().Format(time.RFC3339))
	}
	return c
}
