package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// Defaults of Options.
const (
	DefaultLogMaxBytes      = 10 << 20
	DefaultLogMaxFiles      = 3
	DefaultLogCheckInterval = time.Second
	DefaultTailLines        = 20
	DefaultStopGrace        = 10 * time.Second
	DefaultPollInterval     = time.Second

	DefaultHealthInterval     = 5 * time.Second
	DefaultHealthTimeout      = 2 * time.Second
	DefaultUnhealthyThreshold = 30 * time.Second
	DefaultStartTimeout       = 60 * time.Second

	// DefaultEventQueue is how many undelivered events the supervisor keeps
	// for a slow OnEvent before it drops the oldest.
	DefaultEventQueue = 1024
)

// Options configure a Supervisor. Zero fields take their defaults.
type Options struct {
	// Logger receives one structured event per decision; nil discards.
	Logger *slog.Logger
	// LogDir holds one log file per node, <LogDir>/<name>.log. Required.
	LogDir string
	// LogMaxBytes caps a log file before it is rotated (default 10 MiB).
	LogMaxBytes int64
	// LogMaxFiles is the number of files kept per node, the current one
	// included (default 3: name.log, name.log.1, name.log.2).
	LogMaxFiles int
	// LogCheckInterval is how often the size cap is checked (default 1 s).
	LogCheckInterval time.Duration
	// TailLines is how many last log lines Status keeps after an exit (default 20).
	TailLines int
	// StopGrace is the time between SIGTERM and SIGKILL (default 10 s).
	StopGrace time.Duration
	// PollInterval is how often an adopted process's identity is checked (default 1 s).
	PollInterval time.Duration
	// Health configures probes.
	Health HealthOptions
	// Restart is the restart policy of every node.
	Restart PolicyOptions
	// OnEvent, when set, receives the events in order, one at a time, from
	// a delivery goroutine of the supervisor: it may block (an fsynced
	// write) without delaying any node's restart or stop. Events wait in a
	// bounded queue meanwhile; when EventQueue events are waiting, the
	// oldest is dropped and counted (DroppedEvents), so a consumer that
	// must not miss a state reads Status as well.
	OnEvent func(Event)
	// EventQueue caps the undelivered events (default 1024).
	EventQueue int
}

// Validate reports every problem at once.
func (o Options) Validate() error {
	var errs []error
	if o.LogDir == "" {
		errs = append(errs, errors.New("log dir is empty"))
	}
	neg := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	neg("log check interval", o.LogCheckInterval)
	neg("stop grace", o.StopGrace)
	neg("poll interval", o.PollInterval)
	neg("health interval", o.Health.Interval)
	neg("health timeout", o.Health.Timeout)
	neg("unhealthy threshold", o.Health.Threshold)
	neg("start timeout", o.Health.StartTimeout)
	if o.LogMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("log max bytes %d is negative", o.LogMaxBytes))
	}
	if o.LogMaxFiles < 0 {
		errs = append(errs, fmt.Errorf("log max files %d is negative", o.LogMaxFiles))
	}
	if o.TailLines < 0 {
		errs = append(errs, fmt.Errorf("tail lines %d is negative", o.TailLines))
	}
	if o.EventQueue < 0 {
		errs = append(errs, fmt.Errorf("event queue %d is negative", o.EventQueue))
	}
	d := o.withDefaults()
	if o.Health.Threshold >= 0 && o.Health.Interval >= 0 && d.Health.Threshold <= d.Health.Interval {
		errs = append(errs, fmt.Errorf("unhealthy threshold %s must exceed the health interval %s", d.Health.Threshold, d.Health.Interval))
	}
	if err := o.Restart.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	set := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LogMaxBytes == 0 {
		o.LogMaxBytes = DefaultLogMaxBytes
	}
	if o.LogMaxFiles == 0 {
		o.LogMaxFiles = DefaultLogMaxFiles
	}
	if o.TailLines == 0 {
		o.TailLines = DefaultTailLines
	}
	if o.EventQueue == 0 {
		o.EventQueue = DefaultEventQueue
	}
	set(&o.LogCheckInterval, DefaultLogCheckInterval)
	set(&o.StopGrace, DefaultStopGrace)
	set(&o.PollInterval, DefaultPollInterval)
	set(&o.Health.Interval, DefaultHealthInterval)
	set(&o.Health.Timeout, DefaultHealthTimeout)
	set(&o.Health.Threshold, DefaultUnhealthyThreshold)
	set(&o.Health.StartTimeout, DefaultStartTimeout)
	return o
}

// Spec describes a node to run.
type Spec struct {
	// Name identifies the node (the node id): letters, digits, '.', '_',
	// '-'; it names the log file.
	Name string
	// Path is the executable; Args its arguments (without argv[0]).
	Path string
	Args []string
	// Env is added to the supervisor's own environment (later entries win).
	Env []string
	// Dir is the working directory ("" = the supervisor's).
	Dir string
	// HealthURL is probed with GET; 200 means healthy. Empty: no probes,
	// the node counts as running (and healthy) as soon as it started.
	HealthURL string
	// PreStart, when set, runs before every start and restart (not before
	// an adoption); an error fails that start like a start error, so the
	// restart policy applies. The agent re-verifies the binary's checksum here.
	PreStart func(ctx context.Context) error
}

// HealthURL returns the conventional probe URL of a node on a local port.
func HealthURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) + "/healthz" }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate reports every problem with s at once.
func (s Spec) Validate() error {
	var errs []error
	if !nameRE.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("node name %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name))
	}
	if s.Path == "" {
		errs = append(errs, errors.New("executable path is empty"))
	}
	if s.HealthURL != "" {
		u, err := url.Parse(s.HealthURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("health URL %q: want http://host:port/path", s.HealthURL))
		}
	}
	return errors.Join(errs...)
}
