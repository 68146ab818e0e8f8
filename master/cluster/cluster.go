// Package cluster is how a master knows the other masters of its control
// plane: who they are, which one leads, and how the leader fences its
// writes. Every master serves everything (gRPC and HTTP, any agent); only
// the singletons — the liveness sweep of agents whose master died, agent
// garbage collection, the rollout controller, token and certificate
// bookkeeping — run on the leader.
//
// Two Coordinators exist: Single, for one master on bbolt (it is alone,
// so it always leads and needs no fence), and the etcd one (etcd.go), which
// registers each master under an etcd lease and elects the leader with
// go.etcd.io/etcd/client/v3/concurrency, like Kubernetes' controllers.
package cluster

import (
	"context"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// Member is one master as the others see it.
type Member struct {
	// ID names the master (its --master-id, default the host name and the
	// gRPC port); unique in the control plane.
	ID string `json:"id"`
	// GRPCAddr is the host:port agents and the CLI reach its gRPC on.
	GRPCAddr string `json:"grpc_addr"`
	// HTTPURL is the base URL of its HTTP API (http(s)://host:port).
	HTTPURL string `json:"http_url"`
	// Version is the master's build version.
	Version string `json:"version"`
	// Started is when the master started.
	Started time.Time `json:"started"`
	// Leader: this master holds the leadership now.
	Leader bool `json:"leader"`
}

// Coordinator is this master's view of the control plane's masters. Its
// methods are safe for concurrent use.
type Coordinator interface {
	// Self is this master.
	Self() Member
	// Leading reports whether this master leads now. It turns false as soon
	// as this master's lease may have expired (a partitioned leader stops
	// acting before another can be elected).
	Leading() bool
	// Fence returns the conditions a write made as the leader carries
	// (store.ApplyIf): they hold only while this master is still the leader
	// it was elected as, so a deposed leader's late write fails with
	// store.ErrConflict instead of overwriting its successor's. ok is false
	// when this master does not lead. Single returns (nil, true).
	Fence() (conds []store.Cond, ok bool)
	// Members lists the masters alive now (registered under a live lease),
	// the leader marked, sorted by ID.
	Members(ctx context.Context) ([]Member, error)
	// Alive reports whether the master id is alive now (from the last
	// membership this master saw; an unknown id is not alive).
	Alive(id string) bool
	// Close resigns the leadership, if held, and ends the registration.
	Close() error
}

// Single is the Coordinator of a master alone on its store (bbolt).
type Single struct {
	self Member
}

// NewSingle returns the Coordinator of a master that is alone.
func NewSingle(self Member) *Single {
	self.Leader = true
	return &Single{self: self}
}

// Self is this master.
func (s *Single) Self() Member { return s.self }

// Leading is always true: the master is alone.
func (s *Single) Leading() bool { return true }

// Fence is empty: nobody else writes.
func (s *Single) Fence() ([]store.Cond, bool) { return nil, true }

// Members is this master.
func (s *Single) Members(context.Context) ([]Member, error) { return []Member{s.self}, nil }

// Alive reports whether id is this master.
func (s *Single) Alive(id string) bool { return id == s.self.ID }

// Close does nothing.
func (s *Single) Close() error { return nil }

var _ Coordinator = (*Single)(nil)
