package cluster

import (
	"context"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// Status is the control plane's masters and store as status pages show
// them (/api/cluster, sutra status).
type Status struct {
	// Masters alive now, the leader marked.
	Masters []Member `json:"masters"`
	// Leader is the leading master's ID ("" while an election runs).
	Leader string `json:"leader"`
	// Store is the store's health.
	Store store.Health `json:"store"`
}

// StatusOf gathers the Status of c and st within a few seconds: a store
// that does not answer is reported as such, never waited for.
func StatusOf(ctx context.Context, c Coordinator, st store.Store) Status {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var s Status
	ms, err := c.Members(ctx)
	if err != nil {
		self := c.Self()
		self.Leader = c.Leading()
		ms = []Member{self}
	}
	s.Masters = ms
	for _, m := range ms {
		if m.Leader {
			s.Leader = m.ID
		}
	}
	if hr, ok := st.(store.HealthReporter); ok {
		s.Store = hr.Health(ctx)
	} else {
		s.Store = store.Health{Backend: "unknown", OK: true}
		if _, err := st.Revision(ctx); err != nil {
			s.Store.OK, s.Store.Detail = false, err.Error()
		}
	}
	if err != nil {
		s.Store.Detail = joinDetail(s.Store.Detail, "masters: "+err.Error())
	}
	return s
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// Gauges adapts a Coordinator to the metrics' view: whether it leads and
// how many masters are alive (from its cached membership where it has one).
type Gauges struct{ C Coordinator }

// Leading reports whether the master leads now.
func (g Gauges) Leading() bool { return g.C.Leading() }

// AliveMasters counts the masters alive now (at least this one).
func (g Gauges) AliveMasters() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ms, err := g.C.Members(ctx)
	if err != nil || len(ms) == 0 {
		return 1
	}
	return len(ms)
}
