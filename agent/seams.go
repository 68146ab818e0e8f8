package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/supervisor"
)

// The agent's seams: the parts of the world its core acts on, each behind a
// small interface so that the core can be built in unit tests with
// in-memory fakes (agent_core_test.go). New wires the real ones: the
// supervisor's child processes, the fetcher's HTTP downloads and cache, the
// control-plane gRPC client, the system clock and a bind test for ports.

// nodeSupervisor runs the storage nodes (package supervisor).
type nodeSupervisor interface {
	// Start supervises a new node.
	Start(spec supervisor.Spec) error
	// AdoptIdentity supervises a running process on a full identity match.
	AdoptIdentity(spec supervisor.Spec, want supervisor.Identity) error
	// Stop stops node id gracefully and returns its last status.
	Stop(ctx context.Context, id string) (supervisor.Status, error)
	// Status is every node the supervisor holds.
	Status() []supervisor.Status
	// NodeStatus is node id's status; false when it holds no such node.
	NodeStatus(id string) (supervisor.Status, bool)
	// Live reports whether node id is supervised (running, starting, in
	// backoff or failed); a node whose supervision ended is not.
	Live(id string) bool
	// RestartNow forgets node id's failures and starts it at once if it
	// waits in backoff (or failed); a node about to back off starts again
	// at once instead.
	RestartNow(id string) error
	StopAll(ctx context.Context) error
	Detach()
	// WaitEvents returns once the events queued so far were delivered.
	WaitEvents(ctx context.Context) error
	// FindMarked is the running processes of this user whose environment
	// has key=value (supervisor.FindMarked).
	FindMarked(key, value string) ([]supervisor.Marked, error)
}

// binaryFetcher resolves, downloads and verifies storage-server binaries
// (package agent/fetch and its cache).
type binaryFetcher interface {
	// Ensure returns the verified cached binary of version, downloading it
	// when needed.
	Ensure(ctx context.Context, version string) (cache.Entry, error)
	// VerifyCached re-hashes the cached binary of version.
	VerifyCached(ctx context.Context, version string) (cache.Entry, error)
	// NewestUsable is the newest verified cached binary accept takes.
	NewestUsable(ctx context.Context, accept func(cache.Entry) bool) (cache.Entry, error)
	// Prune removes old cached versions except inUse; it returns the removed.
	Prune(inUse ...string) ([]string, error)
}

// controlPlane is the connection to the master (package agent/controlplane);
// it calls the agent back through the callbacks New gives it.
type controlPlane interface {
	Run(ctx context.Context) error
	Close() error
}

// clock tells the time of reports and records.
type clock interface{ Now() time.Time }

// seams replaces the real parts in tests; a nil field is the real part.
type seams struct {
	sup      nodeSupervisor
	fetcher  binaryFetcher
	cp       controlPlane
	clock    clock
	portFree func(port int) bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// bindable reports whether port can be bound on all interfaces now.
func bindable(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// realSupervisor adapts *supervisor.Supervisor.
type realSupervisor struct{ *supervisor.Supervisor }

func (s realSupervisor) Start(spec supervisor.Spec) error {
	_, err := s.Supervisor.Start(spec)
	return err
}

func (s realSupervisor) AdoptIdentity(spec supervisor.Spec, want supervisor.Identity) error {
	_, err := s.Supervisor.AdoptIdentity(spec, want)
	return err
}

func (s realSupervisor) Stop(ctx context.Context, id string) (supervisor.Status, error) {
	n := s.Node(id)
	err := s.Supervisor.Stop(ctx, id)
	if n == nil {
		return supervisor.Status{Name: id}, err
	}
	return n.Status(), err
}

func (s realSupervisor) RestartNow(id string) error {
	n := s.Node(id)
	if n == nil {
		return fmt.Errorf("restart node %s: not supervised", id)
	}
	return n.Reset()
}

func (s realSupervisor) NodeStatus(id string) (supervisor.Status, bool) {
	n := s.Node(id)
	if n == nil {
		return supervisor.Status{}, false
	}
	return n.Status(), true
}

func (s realSupervisor) Live(id string) bool {
	n := s.Node(id)
	if n == nil {
		return false
	}
	select {
	case <-n.Done():
		return false
	default:
		return true
	}
}

func (realSupervisor) FindMarked(key, value string) ([]supervisor.Marked, error) {
	return supervisor.FindMarked(key, value)
}

// realFetcher adapts *fetch.Fetcher.
type realFetcher struct{ *fetch.Fetcher }

func (f realFetcher) NewestUsable(ctx context.Context, accept func(cache.Entry) bool) (cache.Entry, error) {
	return f.Cache().NewestVerifiedFunc(ctx, accept)
}
