package agentsvc

import (
	"context"
	"sync"
)

// RunAsService runs the agent under the OS service manager until the manager
// stops it or run returns on its own.
//
// Started interactively (from a terminal, not by a service manager), it simply
// returns run(ctx). Otherwise run gets a context that ends when the service
// manager asks the service to stop (systemd/launchd: SIGTERM; Windows: a stop
// or shutdown control); RunAsService returns run's error once run has
// returned. When run returns by itself (an error, or a clean exit after a
// self-update) the service ends too, and the manager restarts it: systemd
// Restart=always and launchd KeepAlive restart on any exit, and on Windows the
// service reports a failure exit code so that its recovery action restarts it.
func RunAsService(ctx context.Context, run func(context.Context) error) error {
	if Interactive() {
		return run(ctx)
	}
	return runManaged(ctx, run)
}

// program runs the agent in the background between the service manager's
// Start and Stop.
type program struct {
	parent context.Context
	run    func(context.Context) error

	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
	err    error         // run's result, valid after done
}

func newProgram(ctx context.Context, run func(context.Context) error) *program {
	return &program{parent: ctx, run: run, done: make(chan struct{})}
}

// start launches run; it does not block.
func (p *program) start() {
	p.once.Do(func() {
		ctx, cancel := context.WithCancel(p.parent)
		p.cancel = cancel
		go func() {
			defer close(p.done)
			defer cancel()
			p.err = p.run(ctx)
		}()
	})
}

// stop cancels run's context and waits for run to return.
func (p *program) stop() error {
	p.start() // a stop before start still ends cleanly
	p.cancel()
	<-p.done
	return nil
}
