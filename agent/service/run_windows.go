//go:build windows

package agentsvc

import (
	"context"
	"fmt"

	"golang.org/x/sys/windows/svc"
)

// Interactive reports whether the agent was started from a console rather
// than by the Windows service manager.
func Interactive() bool {
	is, err := svc.IsWindowsService()
	return err != nil || !is
}

// runManaged talks to the service manager directly (kardianos's handler
// cannot end the service when run returns on its own).
func runManaged(ctx context.Context, run func(context.Context) error) error {
	h := &handler{p: newProgram(ctx, run)}
	if err := svc.Run(Name, h); err != nil {
		return fmt.Errorf("run as service: %w", err)
	}
	return h.p.err
}

type handler struct{ p *program }

// Execute reports running, starts the agent and ends on a stop or shutdown
// control, or when the agent returns on its own: then with exit code 1 so
// that the service's recovery action restarts it.
func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	h.p.start()
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case <-h.p.done:
			status <- svc.Status{State: svc.StopPending}
			return false, 1
		case <-h.p.parent.Done():
			status <- svc.Status{State: svc.StopPending}
			_ = h.p.stop()
			return false, 0
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending}
				_ = h.p.stop()
				return false, 0
			}
		}
	}
}
