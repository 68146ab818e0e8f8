//go:build !windows

package agentsvc

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kardianos/service"
)

// Interactive reports whether the agent was started from a terminal rather
// than by a service manager (kardianos's check: launched by PID 1 or not).
func Interactive() bool { return service.Interactive() }

func runManaged(ctx context.Context, run func(context.Context) error) error {
	p := newProgram(ctx, run)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	s, err := service.New(kardianosProgram{p}, &service.Config{
		Name: Name,
		Option: service.KeyValue{
			// Wait for the manager's signal, or for run to end on its own.
			"RunWait": func() {
				select {
				case <-sigs:
				case <-ctx.Done():
				case <-p.done:
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("service manager: %w", err)
	}
	if err := s.Run(); err != nil {
		return fmt.Errorf("run as service: %w", err)
	}
	return p.err
}

type kardianosProgram struct{ p *program }

func (k kardianosProgram) Start(service.Service) error { k.p.start(); return nil }
func (k kardianosProgram) Stop(service.Service) error  { return k.p.stop() }
