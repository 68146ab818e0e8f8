package metrics

import "github.com/prometheus/client_golang/prometheus"

var (
	nodesDesc    = prometheus.NewDesc("sutra_agent_nodes", "Nodes of this agent by supervisor state.", []string{"state"}, nil)
	upDesc       = prometheus.NewDesc("sutra_agent_nodes_up", "Nodes of this agent whose process is running.", nil, nil)
	restartsDesc = prometheus.NewDesc("sutra_agent_node_restarts", "Sum of the restart counts of this agent's current nodes.", nil, nil)
	cacheDesc    = prometheus.NewDesc("sutra_agent_cache_bytes", "Bytes in the agent's binary cache.", nil, nil)
	certDesc     = prometheus.NewDesc("sutra_agent_cert_expiry_timestamp_seconds", "When the agent's certificate expires (Unix seconds).", nil, nil)
	upgradeDesc  = prometheus.NewDesc("sutra_agent_upgrade_phase", "1 for the agent's current self-update phase (none when idle).", []string{"phase"}, nil)
)

// agentNodeStates are the states always exported (at 0 when no node is in
// them); others reported by the supervisor are exported as they appear.
var agentNodeStates = []string{"starting", "running", "stopping", "stopped", "failed", "backoff"}

// maxPhaseLen bounds the phase label (a bounded set in practice).
const maxPhaseLen = 32

// stateCollector reads the agent's state at scrape time.
type stateCollector struct{ m *Metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodesDesc, upDesc, restartsDesc, cacheDesc, certDesc, upgradeDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.opts.State()
	counts := map[string]int{}
	for _, st := range agentNodeStates {
		counts[st] = 0
	}
	restarts := 0
	for _, n := range s.Nodes {
		st := n.State
		if len(st) > maxPhaseLen {
			st = "other"
		}
		counts[st]++
		restarts += max(n.Restarts, 0)
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(n), st)
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, float64(counts["running"]))
	ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.GaugeValue, float64(restarts))
	if b, err := dirBytes(c.m.opts.CacheDir); err == nil {
		ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.GaugeValue, float64(b))
	}
	if t, err := certExpiry(c.m.opts.CertFile); err == nil {
		ch <- prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue, float64(t.Unix()))
	}
	if p := s.UpgradePhase; p != "" {
		if len(p) > maxPhaseLen {
			p = "other"
		}
		ch <- prometheus.MustNewConstMetric(upgradeDesc, prometheus.GaugeValue, 1, p)
	}
}
