package agent

import (
	"context"
)

// job is one long operation run off the control loop — a download of the
// agent or of storage-server, a node upgrade, a node stop — with its own
// cancellation, so that the reconcile loop never waits for it: it checks
// whether the job still runs, cancels it when its purpose is no longer
// desired, and is nudged when it ends.
type job struct {
	key    string // what the job works towards (a version, a checksum)
	cancel context.CancelFunc
	done   chan struct{}
}

// running reports whether j exists and has not ended.
func (j *job) running() bool {
	if j == nil {
		return false
	}
	select {
	case <-j.done:
		return false
	default:
		return true
	}
}

// goJob starts fn on its own goroutine with a context that ends when the
// job is cancelled or the agent stops. fn receives its own job, to check it
// is still the current one before publishing a result, and nudges the
// reconcile loop when its result needs acting on (a job that always nudged
// would make the loop spin on jobs it starts every round).
func (a *Agent) goJob(key string, fn func(ctx context.Context, j *job)) *job {
	ctx, cancel := context.WithCancel(a.jobCtx)
	j := &job{key: key, cancel: cancel, done: make(chan struct{})}
	a.jobs.Add(1)
	go func() {
		defer a.jobs.Done()
		defer close(j.done)
		defer cancel()
		fn(ctx, j)
	}()
	return j
}
