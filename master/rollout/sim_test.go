package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sutragrid/sutra/master/fleet"
)

// sim is a small fleet: each agent runs one node; a desired version is
// applied at once; versions in bad crash (the agent rolls the node back).
type sim struct {
	mu       sync.Mutex
	agents   map[string]*fleet.Agent
	bad      map[string]bool
	events   []Event
	failSets int // SetDesiredVersion calls that fail (a crash before the write)
	sets     []Change
}

func newSim(n int, version string) *sim {
	s := &sim{agents: map[string]*fleet.Agent{}, bad: map[string]bool{}}
	for i := range n {
		id := fmt.Sprintf("agent-%02d", i)
		s.agents[id] = &fleet.Agent{ID: id, Platform: "linux", Arch: "x86_64", Health: fleet.Healthy, AgentVersion: "0.1.0",
			Labels:  map[string]string{"zone": []string{"a", "b"}[i%2]},
			Desired: fleet.Desired{Generation: 1, StorageServerVersion: version}, AppliedGeneration: 1,
			Nodes: []fleet.NodeStatus{{NodeID: id + "-n", State: fleet.NodeRunning, Version: version}}}
	}
	return s
}

func (s *sim) Agents() []fleet.Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]fleet.Agent, 0, len(s.agents))
	for _, a := range s.agents {
		c := *a
		c.Nodes = append([]fleet.NodeStatus(nil), a.Nodes...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *sim) SetDesiredVersion(_ context.Context, c fleet.VersionChange) ([]fleet.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failSets > 0 {
		s.failSets--
		return nil, errors.New("crashed")
	}
	a := s.agents[c.AgentID]
	if a == nil {
		return nil, errors.New("unknown agent")
	}
	s.sets = append(s.sets, Change{AgentID: c.AgentID, Version: c.StorageServerVersion})
	a.Desired.StorageServerVersion = c.StorageServerVersion
	a.Desired.Generation++
	a.AppliedGeneration = a.Desired.Generation
	v := c.StorageServerVersion
	if s.bad[v] {
		old := a.Nodes[0].Version
		a.Nodes[0].Message = fmt.Sprintf("upgrade to storage-server %s failed and was rolled back to %s", v, old)
		a.Nodes[0].LastLogLines = []string{"panic: bad release " + v}
	} else {
		a.Nodes[0].Version, a.Nodes[0].Message, a.Nodes[0].LastLogLines = v, "", nil
	}
	return []fleet.Agent{*a}, nil
}

func (s *sim) Record(_ context.Context, typ, agentID, msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, Event{Type: typ, AgentID: agentID, Message: msg})
	return nil
}

// upgrading counts agents whose desired version differs from what every
// node runs healthily, i.e. in flight.
func (s *sim) desiredOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agents[id].Desired.StorageServerVersion
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
