package cluster

import (
	"context"
	"time"
)

// Notifier is implemented by Coordinators whose leadership changes over
// time (Etcd). Leadership returns the current term (how many times this
// master has become leader), whether it leads now, and a channel closed
// at the next change of either. Coordinators without it (Single) are
// polled.
type Notifier interface {
	Leadership() (term uint64, leading bool, changed <-chan struct{})
}

// pollInterval is how often RunWhileLeading asks a Coordinator that is not
// a Notifier whether it still leads.
const pollInterval = 100 * time.Millisecond

// RunWhileLeading runs fn while c leads: fn gets a context cancelled when
// the leadership is lost (or ctx ends), and RunWhileLeading waits for fn to
// return before it looks again. Each time c becomes leader again, fn runs
// again; if fn returns on its own, it runs next after the next election.
// With Single, fn runs once, until ctx ends. RunWhileLeading returns when
// ctx ends and fn has returned. The singletons of the control plane (the
// liveness sweep, agent garbage collection, the rollout controller, the
// compactor) run under it.
func RunWhileLeading(ctx context.Context, c Coordinator, fn func(ctx context.Context)) {
	n, _ := c.(Notifier)
	state := func() (uint64, bool, <-chan struct{}) {
		if n != nil {
			return n.Leadership()
		}
		return 0, c.Leading(), nil
	}
	// wait blocks until changed closes, the poll interval passes (no
	// notifier) or done closes; false when ctx ended.
	wait := func(changed <-chan struct{}, done <-chan struct{}) bool {
		var tick <-chan time.Time
		if changed == nil {
			t := time.NewTimer(pollInterval)
			defer t.Stop()
			tick = t.C
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		case <-tick:
		case <-done:
		}
		return true
	}
	var ranTerm uint64
	ran := false
	for ctx.Err() == nil {
		term, leading, changed := state()
		if !leading || (ran && term == ranTerm) {
			if !leading {
				ran = false
			}
			if !wait(changed, nil) {
				return
			}
			continue
		}
		ran, ranTerm = true, term
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn(lctx)
		}()
	watch:
		for {
			t, l, ch := state()
			if !l || t != term || !wait(ch, done) {
				break
			}
			select {
			case <-done:
				break watch
			default:
			}
		}
		cancel()
		<-done
	}
}
