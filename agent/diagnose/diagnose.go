// Package diagnose gathers what an operator needs to see on a broken agent
// machine (sutra-agent diagnose): the configuration in effect with its
// secrets redacted, whether the master answers on its gRPC and HTTP ports
// (and, when not, which step failed: DNS, TCP, TLS, authentication, rate
// limiting), the agent's certificate, the binary cache and its
// verification, the recorded nodes and their processes with the last lines
// of their logs, the self-update state, the service manager's view, and the
// machine (platform, versions, free disk).
//
// Gather only reads. It never executes a cached binary, never deletes a
// corrupt cache entry (the agent does that when it next uses the cache),
// never writes the node record, and never enrolls or heartbeats: the gRPC
// check is the standard health service, which the master still subjects to
// its certificate and revocation checks. Every file is opened without
// blocking (O_NONBLOCK) and refused unless it is a regular file, so a FIFO
// planted where a log or record should be is reported, not waited on; every
// network step has a short timeout and the two ports are checked
// concurrently.
//
// Secrets: the join token (from the config, the environment or the
// join-token file) and the agent's private key are read only to check them;
// the report carries neither, and Redact/RedactText replace every
// occurrence of a known secret value in what is shown, including log lines
// copied into a bundle.
package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sutragrid/sutra/agent/config"
)

// Defaults of Options.
const (
	DefaultTimeout  = 3 * time.Second
	DefaultLogLines = 20
	// MinFreeBytes: less free space than this on the cache or data
	// directory's file system is a problem.
	MinFreeBytes = 64 << 20
)

// Options configures Gather.
type Options struct {
	// Config is the configuration in effect (agent/config's loader, as
	// `sutra-agent run` resolves it). Required.
	Config *config.Config
	// ExtraSecrets are more values never to show (e.g. a --join-token).
	ExtraSecrets []string
	// Timeout bounds each network step (default 3 s).
	Timeout time.Duration
	// LogLines is how many last lines of each node log the report holds
	// (default 20).
	LogLines int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ServiceStatus returns the agent service's state ("running",
	// "stopped", "not-installed", "unknown"); nil: not checked.
	ServiceStatus func(ctx context.Context) (string, error)
	// Systemctl runs `systemctl show sutra-agent -p ...` and returns its
	// output; nil: the real one on Linux when systemctl is installed.
	Systemctl func(ctx context.Context) (string, error)
}

// Report is everything Gather found. Problems lists what is wrong (the
// command exits 1 when it is not empty); Warnings are worth a look but do
// not fail the check.
type Report struct {
	Generated time.Time     `json:"generated"`
	Config    ConfigReport  `json:"config"`
	Master    []PortCheck   `json:"master"`
	Cert      CertReport    `json:"certificate"`
	Cache     []CacheEntry  `json:"cache"`
	Nodes     []NodeReport  `json:"nodes"`
	Upgrade   UpgradeReport `json:"upgrade"`
	Service   ServiceReport `json:"service"`
	Host      HostReport    `json:"host"`
	Problems  []string      `json:"problems"`
	Warnings  []string      `json:"warnings,omitempty"`

	secrets []string // values never to show; not exported, never marshalled
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, a ...any) {
	r.Problems = append(r.Problems, RedactText(fmt.Sprintf(format, a...), r.secrets))
}

func (r *Report) warn(format string, a ...any) {
	r.Warnings = append(r.Warnings, RedactText(fmt.Sprintf(format, a...), r.secrets))
}

// Secrets returns the secret values Gather knows of (for redacting what a
// caller adds, such as log files in a bundle).
func (r *Report) Secrets() []string { return r.secrets }

func (o *Options) defaults() error {
	if o.Config == nil {
		return errors.New("diagnose: Config is required")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.LogLines <= 0 {
		o.LogLines = DefaultLogLines
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Gather runs every check and returns the report. It returns an error only
// for a missing config; everything found wrong is in Report.Problems.
func Gather(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	cfg := opts.Config
	r := &Report{Generated: opts.Now().UTC(), Problems: []string{}}
	r.secrets = knownSecrets(cfg, opts.ExtraSecrets)
	r.Config = configReport(cfg, r.secrets)

	tlsDir := filepath.Join(cfg.Agent.AgentDataDir, "tls")
	id := loadIdentity(tlsDir)
	r.Cert = certReport(r, cfg, id, opts.Now())

	// The network checks run concurrently with the local ones.
	var wg sync.WaitGroup
	var master []PortCheck
	wg.Add(1)
	go func() {
		defer wg.Done()
		master = checkMaster(ctx, cfg, id, opts.Timeout)
	}()
	var svc ServiceReport
	wg.Add(1)
	go func() {
		defer wg.Done()
		svc = serviceReport(ctx, opts)
	}()

	r.Cache = cacheReport(ctx, r, cfg)
	r.Nodes = nodesReport(r, cfg, opts.LogLines)
	r.Upgrade = upgradeReport(r, cfg.Agent.AgentDataDir)
	r.Host = hostReport(r, cfg)
	wg.Wait()
	r.Master = master
	// With several masters one that is down is a warning (the agent uses
	// another); all of one kind down is a problem.
	okBy := map[string]bool{}
	for _, c := range master {
		okBy[c.Name] = okBy[c.Name] || c.OK
	}
	for _, c := range master {
		switch {
		case c.OK:
		case okBy[c.Name]:
			r.warn("master %s port %s: %s (the agent uses another master meanwhile)", c.Name, c.Addr, c.Error)
		default:
			r.problem("master %s port %s: %s", c.Name, c.Addr, c.Error)
		}
	}
	r.Service = svc
	if svc.Error != "" {
		r.warn("service manager: %s", svc.Error)
	}
	if svc.State == "stopped" {
		r.warn("the sutra-agent service is installed but not running (sutra-agent service start)")
	}
	return r, nil
}

// maxRead caps what readSmall reads.
const maxRead = 1 << 20

// errNotRegular: a path that is not a regular file (a FIFO, a device, a
// directory) where one was expected.
var errNotRegular = errors.New("not a regular file")

// readSmall reads at most max bytes of the regular file at path without
// blocking on anything else.
func readSmall(path string, max int64) ([]byte, error) {
	f, err := openNoBlock(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", path, errNotRegular, fi.Mode().Type())
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// tailFile returns the last max bytes of the regular file at path and its
// size, never blocking on a FIFO.
func tailFile(path string, max int64) ([]byte, int64, error) {
	f, err := openNoBlock(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: %w (%s)", path, errNotRegular, fi.Mode().Type())
	}
	off := max64(fi.Size()-max, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	return buf[:n], fi.Size(), nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
