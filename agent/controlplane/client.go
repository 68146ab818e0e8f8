package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sutragrid/sutra/agent/metrics"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/masters"
	"github.com/sutragrid/sutra/internal/retryinfo"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Options configures a Client. Zero values are replaced by the documented defaults.
type Options struct {
	// MasterAddr is the master's gRPC address, host:port, or several
	// masters as a comma-separated list (config agent.master_host; see
	// failover.go). Required.
	MasterAddr string
	// Resolver resolves master host names to addresses (default
	// net.DefaultResolver.LookupHost); a name with several addresses counts
	// as several masters. Tests inject one.
	Resolver func(ctx context.Context, host string) ([]string, error)
	// TLSDir holds the agent's identity (agent.key, agent.crt, ca.crt; see
	// enroll.go), usually {agent_data_dir}/tls. Required.
	TLSDir string
	// JoinToken enrolls the agent when TLSDir holds no identity yet (or an
	// expired one). A secret: never logged.
	JoinToken string
	// JoinTokenFile is where `sutra-agent service install --join-token`
	// left a token ({agent_data_dir}/join-token, see jointokenfile.go): read
	// at New when JoinToken is empty, deleted after a successful enrollment.
	// Empty: none.
	JoinTokenFile string
	// AgentID, Hostname, Platform, Arch and AgentVersion identify the agent. AgentID is required.
	AgentID, Hostname, Platform, Arch, AgentVersion string
	// InstanceID is this installation's persistent random id (LoadInstanceID),
	// sent with every registration; "" sends none.
	InstanceID string
	// MaxStorageNodes is the agent's capacity.
	MaxStorageNodes int
	// Labels are free-form key/values shown to operators and usable for placement.
	Labels map[string]string

	// Report returns the agent's current actual state; called before every RPC. Required.
	Report func() Report
	// OnDesired receives every desired state the master sends, in order. Required.
	OnDesired func(Desired)
	// OnRegistered is called after each successful registration (optional).
	OnRegistered func()
	// OnHeartbeat is called after each successful heartbeat (optional).
	OnHeartbeat func()
	// OnHeartbeatFailed is called after each failed heartbeat (optional).
	OnHeartbeatFailed func(error)
	// Summary, when set, is the compact metrics summary sent with every
	// heartbeat (agent/metrics), which the master sums over the fleet.
	Summary func() metrics.Summary

	// HeartbeatInterval is used until the master names one (default 5 s).
	HeartbeatInterval time.Duration
	// BackoffMin and BackoffMax bound the full-jitter registration backoff (defaults 1 s and 30 s).
	BackoffMin, BackoffMax time.Duration
	// RPCTimeout bounds each call (default 10 s).
	RPCTimeout time.Duration
	// Logger receives one line per event (default: discard).
	Logger *slog.Logger
	// Rand is the jitter source (default: a random seed). Tests inject a fixed one.
	Rand *rand.Rand
}

// Validate reports every missing or invalid option at once.
func (o Options) Validate() error {
	var errs []error
	if o.MasterAddr == "" {
		errs = append(errs, errors.New("controlplane: MasterAddr is required"))
	} else if _, err := masters.ParseHosts(o.MasterAddr); err != nil {
		errs = append(errs, fmt.Errorf("controlplane: MasterAddr %.200q %w", o.MasterAddr, err))
	}
	if o.AgentID == "" {
		errs = append(errs, errors.New("controlplane: AgentID is required"))
	}
	if o.TLSDir == "" {
		errs = append(errs, errors.New("controlplane: TLSDir is required"))
	}
	if o.JoinToken != "" {
		if _, err := jointoken.Parse(o.JoinToken); err != nil {
			errs = append(errs, fmt.Errorf("controlplane: join token: %w", err))
		}
	}
	if o.InstanceID != "" && !validInstanceID(o.InstanceID) {
		errs = append(errs, fmt.Errorf("controlplane: InstanceID %q is not 32 lowercase hex digits", o.InstanceID))
	}
	if o.Report == nil {
		errs = append(errs, errors.New("controlplane: Report is required"))
	}
	if o.OnDesired == nil {
		errs = append(errs, errors.New("controlplane: OnDesired is required"))
	}
	if o.BackoffMin < 0 || o.BackoffMax < 0 || (o.BackoffMax > 0 && o.BackoffMin > o.BackoffMax) {
		errs = append(errs, errors.New("controlplane: want 0 <= BackoffMin <= BackoffMax"))
	}
	return errors.Join(errs...)
}

// Client keeps an agent registered with its master.
type Client struct {
	opts Options
	set  *masters.Set // the masters and the one in use (failover.go)
	// moves counts failovers since the last successful call (Run's
	// goroutine only).
	moves int
	// revokedRetry is the retry delay while the certificate is revoked
	// (revoked.go; shortened by tests).
	revokedRetry time.Duration

	mu        sync.Mutex
	conn      *grpc.ClientConn // to the current master
	rpc       gridv1.GridMasterClient
	tlsConfig *tls.Config      // for new connections (dial)
	cert      *tls.Certificate // presented on new handshakes
	renewDue  time.Time        // when cert is to be renewed
	interval  time.Duration
	connected bool
	lastOK    time.Time
}

// New validates opts and prepares a client; no connection is made until Run.
func New(opts Options) (*Client, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 5 * time.Second
	}
	if opts.BackoffMin == 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 30 * time.Second
	}
	if opts.RPCTimeout <= 0 {
		opts.RPCTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if opts.JoinToken == "" && opts.JoinTokenFile != "" {
		tok, err := ReadJoinTokenFile(opts.JoinTokenFile)
		switch {
		case err == nil:
			opts.JoinToken = tok
		case hasCredentials(opts.TLSDir):
			// Enrolled already: the token is not needed now.
			opts.Logger.Warn("ignoring the join token file", "err", err)
		default:
			return nil, err
		}
	}
	if opts.JoinToken == "" && !hasCredentials(opts.TLSDir) {
		return nil, ErrNoCredentials
	}
	set, err := newMasterSet(opts)
	if err != nil {
		return nil, err
	}
	return &Client{opts: opts, set: set, interval: opts.HeartbeatInterval, revokedRetry: revokedRetry}, nil
}

// connect loads the agent's identity, enrolling first if it has none, and
// prepares the mutual-TLS connection to the master.
func (c *Client) connect(ctx context.Context) error {
	cfg, err := c.credentials(ctx)
	if err != nil {
		return err
	}
	// New handshakes present the current certificate, which renewal
	// replaces (enroll.go).
	cert := cfg.Certificates[0]
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("controlplane: agent certificate: %w", err)
	}
	c.setCert(&cert, leaf)
	c.mu.Lock()
	c.tlsConfig = c.tlsConfigFor(cfg)
	c.mu.Unlock()
	c.refresh(ctx) // a name with several addresses: several masters
	return c.dial()
}

// Connected reports whether the last call to the master succeeded, and when.
func (c *Client) Connected() (bool, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.lastOK
}

// Close releases the connection. Run must have returned.
func (c *Client) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.Close()
}

// Run enrolls if needed, then registers and heartbeats until ctx ends. It
// returns nil on ctx's end and never gives up because the master is
// unreachable; it returns an error when enrollment is refused or the
// master's CA does not match the join token's pin.
func (c *Client) Run(ctx context.Context) error {
	log := c.opts.Logger
	if err := c.connect(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for {
		if err := c.registerWithBackoff(ctx); err != nil {
			return nil // ctx ended
		}
		// Spread a fleet's heartbeats: the first one lands anywhere in the first interval.
		wait := c.jitter(c.currentInterval(), 1.0)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			c.maybeRenew(ctx)
			err := c.heartbeat(ctx)
			if err == nil {
				wait = c.jitter(c.currentInterval(), 0.1)
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			if c.opts.OnHeartbeatFailed != nil {
				c.opts.OnHeartbeatFailed(err)
			}
			if status.Code(err) == codes.NotFound {
				log.Warn("master does not know this agent; registering again", "agent", c.opts.AgentID, "err", err)
				break
			}
			c.setConnected(false)
			if isRevoked(err) {
				wait = c.revokedRetry + c.jitter(c.revokedRetry/10, 1)
				log.Error(revokedMsg, "master", c.master(), "agent", c.opts.AgentID, "retry_in", wait.Round(time.Second), "err", err)
				continue
			}
			if moved, ok := c.failover(ctx, err); ok {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(moved):
				}
				break // register with the new master
			}
			wait = c.retryDelay(err, c.jitter(c.currentInterval(), 0.1))
			log.Warn("heartbeat failed; nodes keep running, retrying", "master", c.master(), "retry_in", wait.Round(time.Millisecond), "err", err)
		}
	}
}

func (c *Client) registerWithBackoff(ctx context.Context) error {
	log := c.opts.Logger
	for attempt := 0; ; attempt++ {
		err := c.register(ctx)
		if err == nil {
			return nil
		}
		c.setConnected(false)
		from := c.master()
		delay := c.retryDelay(err, c.backoff(attempt))
		if wait, moved := c.failover(ctx, err); moved {
			delay = wait
		}
		level := slog.LevelWarn
		msg := "cannot register with master; retrying"
		if attempt > 0 && attempt%10 != 0 {
			level = slog.LevelDebug // an unreachable master: every 10th attempt is enough
		}
		if status.Code(err) == codes.AlreadyExists {
			// Another machine holds this agent_id: nothing changes until an
			// operator acts, so say it loudly on every attempt (the backoff
			// bounds how often); nodes keep running meanwhile.
			level = slog.LevelError
			msg = "master refused registration: another agent instance holds this agent_id; set a unique agent_id in agent-config.toml (retrying; nodes keep running)"
		}
		if isRevoked(err) {
			level, msg = slog.LevelError, revokedMsg
			delay = c.revokedRetry + c.jitter(c.revokedRetry/10, 1)
		}
		log.Log(ctx, level, msg, "master", from, "agent", c.opts.AgentID, "instance", c.opts.InstanceID,
			"attempt", attempt+1, "retry_in", delay.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

func (c *Client) register(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RPCTimeout)
	defer cancel()
	rep := c.opts.Report()
	resp, err := c.client().RegisterAgent(ctx, &gridv1.RegisterAgentRequest{
		AgentId:         c.opts.AgentID,
		InstanceId:      c.opts.InstanceID,
		Hostname:        limits.ClipText(c.opts.Hostname, limits.MaxTextLen),
		Platform:        c.opts.Platform,
		Arch:            c.opts.Arch,
		AgentVersion:    c.opts.AgentVersion,
		MaxStorageNodes: uint32(max(c.opts.MaxStorageNodes, 0)),
		Labels:          c.opts.Labels,
		Nodes:           nodesToProto(rep.Nodes),
		Upgrade:         upgradeToProto(rep.Upgrade),
	}, grpc.WaitForReady(false))
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	c.set.Succeeded(c.set.Current())
	c.moves = 0
	c.setInterval(resp.GetHeartbeatIntervalSecs())
	c.setConnected(true)
	c.opts.Logger.Info("registered with master", "master", c.master(), "master_version", resp.GetMasterVersion(),
		"agent", c.opts.AgentID, "instance", c.opts.InstanceID, "heartbeat_interval", c.currentInterval(), "desired_generation", resp.GetDesired().GetGeneration())
	c.deliver(resp.GetDesired())
	if c.opts.OnRegistered != nil {
		c.opts.OnRegistered()
	}
	return nil
}

func (c *Client) summary() *gridv1.AgentSummary {
	if c.opts.Summary == nil {
		return nil
	}
	s := c.opts.Summary()
	return &gridv1.AgentSummary{
		NodesRunning:       s.NodesRunning,
		RestartsTotal:      s.RestartsTotal,
		CacheBytes:         s.CacheBytes,
		FetchFailuresTotal: s.FetchFailuresTotal,
		CertExpiryUnix:     s.CertExpiryUnix,
	}
}

func (c *Client) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RPCTimeout)
	defer cancel()
	rep := c.opts.Report()
	resp, err := c.client().Heartbeat(ctx, &gridv1.HeartbeatRequest{
		AgentId:           c.opts.AgentID,
		AppliedGeneration: rep.AppliedGeneration,
		Nodes:             nodesToProto(rep.Nodes),
		AgentVersion:      c.opts.AgentVersion,
		Upgrade:           upgradeToProto(rep.Upgrade),
		Summary:           c.summary(),
	})
	if err != nil {
		return err
	}
	c.set.Succeeded(c.set.Current())
	c.moves = 0
	c.setInterval(resp.GetHeartbeatIntervalSecs())
	wasConnected, _ := c.Connected()
	c.setConnected(true)
	if !wasConnected {
		c.opts.Logger.Info("master reachable again", "master", c.master())
	}
	c.deliver(resp.GetDesired())
	if c.opts.OnHeartbeat != nil {
		c.opts.OnHeartbeat()
	}
	return nil
}

// retryDelay is how long to wait before the next call after err: fallback
// (the caller's backoff or interval), or, when the master asked for longer
// (RESOURCE_EXHAUSTED with RetryInfo: its rate limits, internal/retryinfo,
// believed up to retryinfo.MaxDelay), that delay plus up to a tenth more as
// jitter, so that a throttled fleet does not come back in the same instant.
func (c *Client) retryDelay(err error, fallback time.Duration) time.Duration {
	d, ok := retryinfo.Delay(err)
	if !ok {
		return fallback
	}
	c.mu.Lock()
	d += time.Duration(c.opts.Rand.Int64N(int64(d/10) + 1))
	c.mu.Unlock()
	return max(fallback, d)
}

// backoff is exponential with full jitter: uniform in [0, min(max, min*2^attempt)],
// never below BackoffMin/2 so a fleet does not spin.
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.opts.BackoffMin << min(attempt, 30)
	if ceiling <= 0 || ceiling > c.opts.BackoffMax {
		ceiling = c.opts.BackoffMax
	}
	floor := c.opts.BackoffMin / 2
	c.mu.Lock()
	d := floor + time.Duration(c.opts.Rand.Int64N(int64(ceiling-floor)+1))
	c.mu.Unlock()
	return d
}

// jitter returns d scaled by a random factor in [1-frac, 1+frac] (frac=1: [0, 2d)... clamped to [0, d] for the first beat).
func (c *Client) jitter(d time.Duration, frac float64) time.Duration {
	c.mu.Lock()
	r := c.opts.Rand.Float64()
	c.mu.Unlock()
	if frac >= 1 {
		return time.Duration(r * float64(d))
	}
	return time.Duration(float64(d) * (1 - frac + 2*frac*r))
}

func (c *Client) setInterval(secs uint32) {
	if secs == 0 {
		return
	}
	c.mu.Lock()
	c.interval = time.Duration(secs) * time.Second
	c.mu.Unlock()
}

func (c *Client) currentInterval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.interval
}

func (c *Client) setConnected(ok bool) {
	c.mu.Lock()
	c.connected = ok
	if ok {
		c.lastOK = time.Now()
	}
	c.mu.Unlock()
}
