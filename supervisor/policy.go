package supervisor

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Default restart policy. A node that fails is restarted after 1 s, 2 s,
// 4 s … capped at 60 s (each delay shortened by up to 20 % of jitter so a
// fleet does not restart in lockstep). The 10th failure within 5 minutes
// puts the node in StateFailed: with the default backoff the first ten
// failures of a node that exits at once span about four minutes
// (1+2+4+8+16+32+60+60+60 s of delays), so a crash loop is declared failed
// after ~4 minutes of trying, while one bad second (a port still in
// TIME_WAIT, a disk briefly full) costs a couple of quick restarts and
// never gives up. A node that stayed healthy for 30 s starts its backoff
// from 1 s again; the failure count still needs the 5-minute window to
// forget old failures, so a node that flaps every half minute is also
// caught (like systemd's StartLimitBurst=10 / StartLimitIntervalSec=5min).
const (
	DefaultInitialDelay = time.Second
	DefaultMaxDelay     = 60 * time.Second
	DefaultMultiplier   = 2.0
	DefaultJitter       = 0.2
	DefaultResetAfter   = 30 * time.Second
	DefaultMaxFailures  = 10
	DefaultInterval     = 5 * time.Minute
)

// PolicyOptions configure a Policy. The zero value is the default policy
// described above; every zero field takes its default.
type PolicyOptions struct {
	// InitialDelay is the delay before the first restart (default 1 s).
	InitialDelay time.Duration
	// MaxDelay caps the delay (default 60 s).
	MaxDelay time.Duration
	// Multiplier grows the delay after each consecutive failure (default 2).
	Multiplier float64
	// Jitter is the fraction by which a delay is randomly shortened, in
	// [0, 1) (default 0.2): delay = base × (1 − Jitter × Rand()). A delay
	// therefore never exceeds MaxDelay. To disable jitter inject a Rand that
	// returns 0.
	Jitter float64
	// ResetAfter: a node healthy for this long restarts its backoff from
	// InitialDelay at its next failure (default 30 s).
	ResetAfter time.Duration
	// MaxFailures within Interval put the node in StateFailed (default 10).
	MaxFailures int
	// Interval is the sliding window of MaxFailures (default 5 min).
	Interval time.Duration
	// NoRestart gives up at the first failure (the agent's
	// restart_failed_nodes = false).
	NoRestart bool

	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand returns a number in [0, 1) (default math/rand/v2.Float64).
	Rand func() float64
}

// Validate reports every problem at once; zero fields are valid (defaults).
func (o PolicyOptions) Validate() error {
	var errs []error
	if o.InitialDelay < 0 {
		errs = append(errs, fmt.Errorf("restart initial delay %s is negative", o.InitialDelay))
	}
	if o.MaxDelay < 0 {
		errs = append(errs, fmt.Errorf("restart max delay %s is negative", o.MaxDelay))
	}
	d := o.withDefaults()
	if d.MaxDelay < d.InitialDelay {
		errs = append(errs, fmt.Errorf("restart max delay %s is below the initial delay %s", d.MaxDelay, d.InitialDelay))
	}
	if o.Multiplier != 0 && o.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("restart multiplier %g is below 1", o.Multiplier))
	}
	if o.Jitter < 0 || o.Jitter >= 1 {
		errs = append(errs, fmt.Errorf("restart jitter %g is outside [0, 1)", o.Jitter))
	}
	if o.ResetAfter < 0 {
		errs = append(errs, fmt.Errorf("restart reset-after %s is negative", o.ResetAfter))
	}
	if o.MaxFailures < 0 {
		errs = append(errs, fmt.Errorf("max failures %d is negative", o.MaxFailures))
	}
	if o.Interval < 0 {
		errs = append(errs, fmt.Errorf("failure interval %s is negative", o.Interval))
	}
	return errors.Join(errs...)
}

func (o PolicyOptions) withDefaults() PolicyOptions {
	if o.InitialDelay == 0 {
		o.InitialDelay = DefaultInitialDelay
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = max(DefaultMaxDelay, o.InitialDelay)
	}
	if o.Multiplier == 0 {
		o.Multiplier = DefaultMultiplier
	}
	if o.Jitter == 0 {
		o.Jitter = DefaultJitter
	}
	if o.ResetAfter == 0 {
		o.ResetAfter = DefaultResetAfter
	}
	if o.MaxFailures == 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	return o
}

// Input is what happened to a node, fed to Policy.Decide.
type Input int

const (
	// InputStartFailed: the process could not be started (exec error).
	InputStartFailed Input = iota + 1
	// InputExited: the process exited (or was killed) without being asked to stop.
	InputExited
	// InputUnhealthy: the process was alive but unhealthy past the threshold and was killed.
	InputUnhealthy
	// InputStop: the operator or the master asked the node to stop.
	InputStop
)

func (i Input) String() string {
	switch i {
	case InputStartFailed:
		return "start failed"
	case InputExited:
		return "exited"
	case InputUnhealthy:
		return "unhealthy"
	case InputStop:
		return "stop requested"
	}
	return fmt.Sprintf("Input(%d)", int(i))
}

// Action is what the caller must do next.
type Action int

const (
	// ActionRestart: start the node again after Decision.Delay.
	ActionRestart Action = iota + 1
	// ActionGiveUp: the node is failed; do not restart until Reset.
	ActionGiveUp
	// ActionStop: the node stays stopped.
	ActionStop
)

func (a Action) String() string {
	switch a {
	case ActionRestart:
		return "restart"
	case ActionGiveUp:
		return "give-up"
	case ActionStop:
		return "stop"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the outcome of Policy.Decide.
type Decision struct {
	Action Action
	// Delay before the restart (ActionRestart only).
	Delay time.Duration
	// Failures counts the failures within the interval, this one included.
	Failures int
	// Reason explains the decision in words, for logs and status.
	Reason string
}

// Policy decides whether and when a node is restarted. It is a pure state
// machine: no goroutines, timers or I/O; time and randomness come from
// PolicyOptions.Now and .Rand. The caller feeds it what happened (Started,
// Healthy, Unhealthy, Decide) and waits for the returned delay itself. A
// Policy is not safe for concurrent use; one goroutine owns it.
type Policy struct {
	o            PolicyOptions
	attempt      int         // consecutive failures since the last backoff reset
	failures     []time.Time // failure times within the interval
	healthySince time.Time   // zero while not (yet) healthy
	failed       bool
}

// NewPolicy validates opts and returns a policy with no failures.
func NewPolicy(opts PolicyOptions) (*Policy, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("restart policy: %w", err)
	}
	return &Policy{o: opts.withDefaults()}, nil
}

// Started records that a process (re)started: it is not healthy yet.
func (p *Policy) Started() { p.healthySince = time.Time{} }

// Healthy records a healthy observation; the node counts as healthy from
// the first one after Started or Unhealthy.
func (p *Policy) Healthy() {
	if p.healthySince.IsZero() {
		p.healthySince = p.o.Now()
	}
}

// Unhealthy records a failed health observation: the healthy period ends.
func (p *Policy) Unhealthy() { p.healthySince = time.Time{} }

// Failed reports whether the policy gave up.
func (p *Policy) Failed() bool { return p.failed }

// Reset forgets every failure and leaves StateFailed: the master asked
// for the node again.
func (p *Policy) Reset() {
	p.attempt, p.failures, p.failed, p.healthySince = 0, nil, false, time.Time{}
}

// Decide returns what to do after in.
func (p *Policy) Decide(in Input) Decision {
	if in == InputStop {
		p.healthySince = time.Time{}
		return Decision{Action: ActionStop, Failures: len(p.failures), Reason: "stop requested"}
	}
	now := p.o.Now()
	reset := false
	if !p.healthySince.IsZero() && now.Sub(p.healthySince) >= p.o.ResetAfter {
		p.attempt, reset = 0, true
	}
	p.healthySince = time.Time{}
	p.failures = append(p.failures, now)
	cut := 0
	for cut < len(p.failures) && now.Sub(p.failures[cut]) >= p.o.Interval {
		cut++
	}
	p.failures = p.failures[cut:]
	n := len(p.failures)

	if p.failed {
		return Decision{Action: ActionGiveUp, Failures: n, Reason: "node is failed; waiting to be asked again"}
	}
	if p.o.NoRestart {
		p.failed = true
		return Decision{Action: ActionGiveUp, Failures: n, Reason: in.String() + "; restarts are disabled"}
	}
	if n >= p.o.MaxFailures {
		p.failed = true
		return Decision{Action: ActionGiveUp, Failures: n,
			Reason: fmt.Sprintf("%s; %d failures within %s: giving up until asked again", in, n, p.o.Interval)}
	}
	delay := p.backoff(p.attempt)
	p.attempt++
	reason := fmt.Sprintf("%s; restart %d in %s", in, p.attempt, delay)
	if reset {
		reason += " (backoff reset after a healthy run)"
	}
	return Decision{Action: ActionRestart, Delay: delay, Failures: n, Reason: reason}
}

// backoff is base × (1 − Jitter × Rand()) with base = Initial × Multiplier^n
// capped at MaxDelay.
func (p *Policy) backoff(n int) time.Duration {
	base := float64(p.o.InitialDelay)
	for i := 0; i < n && base < float64(p.o.MaxDelay); i++ {
		base *= p.o.Multiplier
	}
	base = min(base, float64(p.o.MaxDelay))
	r := p.o.Rand()
	if r < 0 || r >= 1 {
		r = 0
	}
	return time.Duration(math.Round(base * (1 - p.o.Jitter*r)))
}
