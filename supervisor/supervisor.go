package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Sentinel errors.
var (
	// ErrIdentityMismatch: the pid to adopt now belongs to another process.
	ErrIdentityMismatch = errors.New("process identity changed (pid reused)")
	// ErrExists: a node of that name is already supervised.
	ErrExists = errors.New("node already supervised")
	// ErrUnknownNode: no node of that name is supervised.
	ErrUnknownNode = errors.New("no such node")
	// ErrNodeEnded: the node's supervision ended (stopped or detached).
	ErrNodeEnded = errors.New("node supervision ended")
)

// Supervisor runs nodes. It is safe for concurrent use.
type Supervisor struct {
	opts   Options
	log    *slog.Logger
	client *http.Client

	mu    sync.Mutex
	nodes map[string]*Node

	events eventQueue
}

// New validates opts and returns a supervisor with no nodes.
func New(opts Options) (*Supervisor, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("supervisor options: %w", err)
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("supervisor log dir: %w", err)
	}
	return &Supervisor{
		opts:   opts,
		log:    opts.Logger,
		client: newProbeClient(opts.Health.Timeout),
		nodes:  map[string]*Node{},
	}, nil
}

// LogPath is the log file of the node named name.
func (s *Supervisor) LogPath(name string) string {
	return filepath.Join(s.opts.LogDir, name+".log")
}

// Start supervises a new node: it is started at once (by its goroutine;
// watch Status or OnEvent for the pid and for start errors).
func (s *Supervisor) Start(spec Spec) (*Node, error) {
	return s.add(spec, nil)
}

// AdoptIdentity supervises a node that is already running — started by a
// previous agent — on a full identity match: the live process want.PID must
// have want's start time, have started in the current boot and run want.Exe
// (or spec.Path). Without a boot id to compare (a record written by an
// older agent, or a boot id that cannot be read) the process is adopted only
// where start times are wall-clock times, or when its command line is
// exactly spec's. Anything else fails with ErrIdentityMismatch (the process
// is left alone) or ErrNoProcess; start a fresh node then. When the adopted
// process dies, the restart policy starts a fresh child from spec.
func (s *Supervisor) AdoptIdentity(spec Spec, want Identity) (*Node, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	exe := want.Exe
	if exe == "" {
		exe = spec.Path
	}
	if err := checkIdentity(want, exe, spec.Args); err != nil {
		return nil, err
	}
	a, err := adoptProc(want.PID, want.StartTime, s.opts.PollInterval)
	if err != nil {
		return nil, err
	}
	n, err := s.add(spec, a)
	if err != nil {
		a.release()
		return nil, err
	}
	return n, nil
}

// add registers a node for spec and starts its goroutine; p is an adopted
// process, or nil to start a child.
func (s *Supervisor) add(spec Spec, p proc) (*Node, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	pol, err := NewPolicy(s.opts.Restart)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.nodes[spec.Name]; ok {
		select {
		case <-old.done:
		default:
			return nil, fmt.Errorf("node %s: %w", spec.Name, ErrExists)
		}
	}
	n := newNode(s, spec, pol)
	s.nodes[spec.Name] = n
	go n.run(p)
	return n, nil
}

// Node returns the node named name, or nil.
func (s *Supervisor) Node(name string) *Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[name]
}

// Status returns a snapshot of every node, sorted by name.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	nodes := make([]*Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Stop stops the node named name gracefully and forgets it.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	n := s.Node(name)
	if n == nil {
		return fmt.Errorf("stop %s: %w", name, ErrUnknownNode)
	}
	if err := n.Stop(ctx); err != nil {
		return err
	}
	s.forget(n)
	return nil
}

func (s *Supervisor) forget(n *Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes[n.spec.Name] == n {
		delete(s.nodes, n.spec.Name)
	}
}

// StopAll stops every node concurrently and waits (bounded by ctx).
func (s *Supervisor) StopAll(ctx context.Context) error {
	s.mu.Lock()
	nodes := make([]*Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			if errs[i] = n.Stop(ctx); errs[i] == nil {
				s.forget(n)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Detach ends supervision of every node without stopping them (an agent
// exiting with stop_nodes_on_exit = false; the next agent re-adopts them
// from the pids and start times it recorded).
func (s *Supervisor) Detach() {
	s.mu.Lock()
	nodes := s.nodes
	s.nodes = map[string]*Node{}
	s.mu.Unlock()
	for _, n := range nodes {
		n.Detach()
	}
}
