package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

func newTestPolicy(t *testing.T, o PolicyOptions, r float64) (*Policy, *testutil.Clock) {
	t.Helper()
	c := testutil.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	o.Now = c.Now
	o.Rand = func() float64 { return r }
	p, err := NewPolicy(o)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

func TestPolicyDefaultBackoffExact(t *testing.T) {
	tests := []struct {
		name string
		rand float64
		want []time.Duration
	}{
		{"no jitter", 0, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
			16 * time.Second, 32 * time.Second, 60 * time.Second, 60 * time.Second, 60 * time.Second}},
		{"half jitter", 0.5, []time.Duration{900 * time.Millisecond, 1800 * time.Millisecond, 3600 * time.Millisecond,
			7200 * time.Millisecond, 14400 * time.Millisecond, 28800 * time.Millisecond, 54 * time.Second, 54 * time.Second, 54 * time.Second}},
		{"quarter jitter", 0.25, []time.Duration{950 * time.Millisecond, 1900 * time.Millisecond, 3800 * time.Millisecond,
			7600 * time.Millisecond, 15200 * time.Millisecond, 30400 * time.Millisecond, 57 * time.Second, 57 * time.Second, 57 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, clock := newTestPolicy(t, PolicyOptions{}, tt.rand)
			for i, want := range tt.want {
				p.Started()
				d := p.Decide(InputExited)
				if d.Action != ActionRestart || d.Delay != want {
					t.Fatalf("failure %d: Decide = %v %s, want restart %s", i+1, d.Action, d.Delay, want)
				}
				if d.Failures != i+1 {
					t.Errorf("failure %d: Failures = %d", i+1, d.Failures)
				}
				clock.Advance(d.Delay) // exits at once after each restart
			}
			// The 10th failure within 5 minutes gives up (delays so far sum to < 5 min).
			d := p.Decide(InputExited)
			if d.Action != ActionGiveUp || d.Failures != 10 || !p.Failed() {
				t.Fatalf("10th failure: Decide = %+v, want give-up with 10 failures", d)
			}
			if !strings.Contains(d.Reason, "10 failures within 5m0s") {
				t.Errorf("reason %q does not explain the give-up", d.Reason)
			}
			// Failed stays failed until Reset.
			if d := p.Decide(InputExited); d.Action != ActionGiveUp {
				t.Errorf("after give-up Decide = %v, want give-up", d.Action)
			}
			p.Reset()
			if d := p.Decide(InputStartFailed); d.Action != ActionRestart || d.Delay != tt.want[0] || d.Failures != 1 {
				t.Errorf("after Reset Decide = %+v, want restart after %s with 1 failure", d, tt.want[0])
			}
		})
	}
}

func TestPolicyFailuresOutsideIntervalAreForgotten(t *testing.T) {
	p, clock := newTestPolicy(t, PolicyOptions{MaxFailures: 3, Interval: time.Minute}, 0)
	d1 := p.Decide(InputExited)
	clock.Advance(40 * time.Second)
	d2 := p.Decide(InputExited)
	clock.Advance(30 * time.Second) // the first failure is now 70 s old
	d3 := p.Decide(InputExited)
	if d1.Action != ActionRestart || d2.Action != ActionRestart || d3.Action != ActionRestart {
		t.Fatalf("decisions = %v %v %v, want three restarts (first failure left the window)", d1.Action, d2.Action, d3.Action)
	}
	if d3.Failures != 2 {
		t.Errorf("failures in window = %d, want 2", d3.Failures)
	}
	if d3.Delay != 4*time.Second {
		t.Errorf("third delay = %s, want 4s (backoff keeps growing without a healthy run)", d3.Delay)
	}
	clock.Advance(time.Second)
	if d := p.Decide(InputUnhealthy); d.Action != ActionGiveUp || d.Failures != 3 {
		t.Errorf("third failure within a minute = %+v, want give-up", d)
	}
}

func TestPolicyHealthyRunResetsBackoff(t *testing.T) {
	p, clock := newTestPolicy(t, PolicyOptions{}, 0)
	for range 4 {
		p.Started()
		p.Decide(InputExited) // 1s 2s 4s 8s
	}
	p.Started()
	p.Healthy()
	clock.Advance(29 * time.Second)
	p.Healthy() // still the same healthy period
	if d := p.Decide(InputExited); d.Delay != 16*time.Second {
		t.Fatalf("after 29 s healthy delay = %s, want 16s (not reset yet)", d.Delay)
	}
	p.Started()
	p.Healthy()
	clock.Advance(30 * time.Second)
	d := p.Decide(InputExited)
	if d.Delay != time.Second || !strings.Contains(d.Reason, "reset") {
		t.Fatalf("after 30 s healthy Decide = %+v, want 1s with a reset reason", d)
	}
	// Unhealthy ends the healthy period.
	p.Started()
	p.Healthy()
	clock.Advance(20 * time.Second)
	p.Unhealthy()
	clock.Advance(20 * time.Second)
	p.Healthy()
	clock.Advance(20 * time.Second)
	if d := p.Decide(InputUnhealthy); d.Delay != 2*time.Second {
		t.Fatalf("after two 20 s healthy periods delay = %s, want 2s", d.Delay)
	}
}

func TestPolicyStopAndNoRestart(t *testing.T) {
	p, _ := newTestPolicy(t, PolicyOptions{}, 0)
	if d := p.Decide(InputStop); d.Action != ActionStop {
		t.Fatalf("stop = %v, want stop", d.Action)
	}
	if d := p.Decide(InputExited); d.Delay != time.Second {
		t.Fatalf("a stop is not a failure: next delay = %s, want 1s", d.Delay)
	}
	q, _ := newTestPolicy(t, PolicyOptions{NoRestart: true}, 0)
	if d := q.Decide(InputExited); d.Action != ActionGiveUp || !strings.Contains(d.Reason, "disabled") {
		t.Fatalf("NoRestart = %+v, want give-up at the first failure", d)
	}
}

func TestPolicyCustomCapAndMultiplier(t *testing.T) {
	p, _ := newTestPolicy(t, PolicyOptions{InitialDelay: 100 * time.Millisecond, MaxDelay: time.Second, Multiplier: 3, Jitter: 0.5, MaxFailures: 100}, 0.5)
	want := []time.Duration{75 * time.Millisecond, 225 * time.Millisecond, 675 * time.Millisecond, 750 * time.Millisecond, 750 * time.Millisecond}
	for i, w := range want {
		if d := p.Decide(InputExited); d.Delay != w {
			t.Errorf("failure %d delay = %s, want %s", i+1, d.Delay, w)
		}
	}
	// Many failures must not overflow the exponent.
	for range 1000 {
		p.Decide(InputExited)
		p.Reset()
	}
}

func TestPolicyOptionsValidate(t *testing.T) {
	err := PolicyOptions{InitialDelay: -1, MaxDelay: -1, Multiplier: 0.5, Jitter: 1, ResetAfter: -1, MaxFailures: -1, Interval: -1}.Validate()
	if err == nil {
		t.Fatal("Validate of all-bad options = nil")
	}
	for _, want := range []string{"initial delay", "max delay", "multiplier", "jitter", "reset-after", "max failures", "interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q does not mention %s", err, want)
		}
	}
	if err := (PolicyOptions{InitialDelay: 2 * time.Minute, MaxDelay: time.Minute}).Validate(); err == nil {
		t.Error("max below initial accepted")
	}
	if err := (PolicyOptions{}).Validate(); err != nil {
		t.Errorf("zero options = %v, want valid", err)
	}
	if _, err := NewPolicy(PolicyOptions{Jitter: 2}); err == nil {
		t.Error("NewPolicy accepted jitter 2")
	}
}
