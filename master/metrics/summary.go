package metrics

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Summary is the compact state an agent sends with every heartbeat
// (master/grpcapi converts it from the wire's AgentSummary).
type Summary struct {
	NodesRunning       uint32
	RestartsTotal      uint64
	CacheBytes         uint64
	FetchFailuresTotal uint64
	// CertExpiryUnix is the agent certificate's NotAfter; 0 when unknown.
	CertExpiryUnix int64
}

// SummaryOf extracts the agent id and heartbeat summary from a heartbeat
// request (master/grpcapi.HeartbeatSummary); ok is false for anything
// else, and a nil summary means the agent sent none.
type SummaryOf func(req any) (agentID string, sum *Summary, ok bool)

// Bounds of the heartbeat summaries kept for the fleet-wide sums.
const (
	// maxSummaries caps the agents whose last summary is kept (the fleet's
	// agent limit is 20,000 by default); beyond it new agents' summaries
	// are not counted until stale ones expire.
	maxSummaries = 100_000
	// summaryTTL drops a summary not refreshed for this long (the agent is
	// offline or was removed), so that sums are over live agents.
	summaryTTL = time.Minute
	// maxSummaryValue bounds one agent's counter so that sums stay exact
	// in a float64 and a hostile agent cannot wrap them.
	maxSummaryValue = 1 << 40
	// A certificate expiry outside (2000, 3000) is ignored.
	minExpiryUnix, maxExpiryUnix = 946684800, 32503680000
)

// summaries are the agents' last heartbeat summaries, by agent id (of
// successful heartbeats only: the id is the one authorization checked).
type summaries struct {
	mu      sync.Mutex
	byAgent map[string]summaryRec
	now     func() time.Time
}

type summaryRec struct {
	t  AgentTotals
	at time.Time
}

func newSummaries() *summaries {
	return &summaries{byAgent: map[string]summaryRec{}, now: time.Now}
}

func clamp(v uint64) int64 { return int64(min(v, maxSummaryValue)) }

// record keeps agent's summary; nil forgets it.
func (s *summaries) record(agent string, sum *Summary) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sum == nil {
		delete(s.byAgent, agent)
		return
	}
	if _, known := s.byAgent[agent]; !known && len(s.byAgent) >= maxSummaries {
		return
	}
	t := AgentTotals{
		NodesRunning:       clamp(uint64(sum.NodesRunning)),
		RestartsTotal:      clamp(sum.RestartsTotal),
		CacheBytes:         clamp(sum.CacheBytes),
		FetchFailuresTotal: clamp(sum.FetchFailuresTotal),
	}
	if e := sum.CertExpiryUnix; e > minExpiryUnix && e < maxExpiryUnix {
		t.MinCertExpiryUnix = e
	}
	s.byAgent[agent] = summaryRec{t: t, at: s.now()}
}

// AgentSummaryTotals sums the fresh summaries, dropping stale ones.
func (s *summaries) AgentSummaryTotals() AgentTotals {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out AgentTotals
	cut := s.now().Add(-summaryTTL)
	minExp := int64(math.MaxInt64)
	for id, r := range s.byAgent {
		if r.at.Before(cut) {
			delete(s.byAgent, id)
			continue
		}
		out.NodesRunning += r.t.NodesRunning
		out.RestartsTotal += r.t.RestartsTotal
		out.CacheBytes += r.t.CacheBytes
		out.FetchFailuresTotal += r.t.FetchFailuresTotal
		if r.t.MinCertExpiryUnix > 0 {
			minExp = min(minExp, r.t.MinCertExpiryUnix)
		}
	}
	if minExp != math.MaxInt64 {
		out.MinCertExpiryUnix = minExp
	}
	return out
}

// summaryCollector exports the sums (sutra_fleet_agent_*).
type summaryCollector struct{ s AgentSummarySource }

func (c summaryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sumNodesDesc, sumRestartsDesc, sumCacheDesc, sumFetchDesc, sumCertDesc} {
		ch <- d
	}
}

func (c summaryCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.s.AgentSummaryTotals()
	gauge(ch, sumNodesDesc, float64(t.NodesRunning))
	gauge(ch, sumRestartsDesc, float64(t.RestartsTotal))
	gauge(ch, sumCacheDesc, float64(t.CacheBytes))
	gauge(ch, sumFetchDesc, float64(t.FetchFailuresTotal))
	if t.MinCertExpiryUnix > 0 {
		gauge(ch, sumCertDesc, float64(t.MinCertExpiryUnix))
	}
}
