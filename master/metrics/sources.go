package metrics

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/fleet"
)

// FleetSource is the part of the fleet read at scrape time (*fleet.Fleet
// implements it).
type FleetSource interface {
	Cluster() fleet.ClusterStatus
	Nodes(agentID string) ([]fleet.Node, error)
}

// CatalogSource is the part of the catalog read at scrape time
// (*catalog.Catalog implements it).
type CatalogSource interface {
	List(artifactName string) []catalog.Binary
	Stats() catalog.Stats
	Hashing() int
}

// DownloadSource reports the downloads being served (*binapi.API
// implements it).
type DownloadSource interface {
	ActiveDownloads() int
}

// RolloutSource is the hook for rollouts (master/rollout): rollouts by
// state (pending, running, paused, completed, aborted, rolled_back) and the
// member agents of active rollouts by their rollout state (pending,
// upgrading, soaking, passed, failed, rolled_back, skipped), read at scrape
// time. Nothing
// implements it until rollouts expose such a read API; AddRollouts is then
// one line in the master's composition.
type RolloutSource interface {
	RolloutCounts() (rolloutsByState, agentsByState map[string]int)
}

// RolloutCountsFunc is a RolloutSource from a function, for wiring the
// rollout controller in the master without this package importing it:
// Sources{Rollouts: metrics.RolloutCountsFunc(func() (map[string]int,
// map[string]int) { ... count ctl.List() ... })}.
type RolloutCountsFunc func() (rolloutsByState, agentsByState map[string]int)

// RolloutCounts calls f.
func (f RolloutCountsFunc) RolloutCounts() (map[string]int, map[string]int) { return f() }

// maxRolloutStates bounds the state labels of the rollout gauges.
const maxRolloutStates = 32

// AddRollouts registers a collector reading r at scrape time
// (sutra_rollouts, sutra_rollout_agents).
func (m *Metrics) AddRollouts(r RolloutSource) { m.reg.MustRegister(rolloutCollector{r}) }

type rolloutCollector struct{ r RolloutSource }

func (c rolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rolloutsDesc
	ch <- rolloutAgentsDesc
}

func (c rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	byState, agents := c.r.RolloutCounts()
	for _, x := range []struct {
		d *prometheus.Desc
		m map[string]int
	}{{rolloutsDesc, byState}, {rolloutAgentsDesc, agents}} {
		n := 0
		for st, v := range x.m {
			if n++; n > maxRolloutStates || !validEventType(st) {
				continue
			}
			gauge(ch, x.d, float64(v), st)
		}
	}
}

// CertSource is the master's own TLS material (*pki.PKI implements it).
type CertSource interface {
	CA() *x509.Certificate
	ServerCertificate() *tls.Certificate
}

// AgentSummarySource is the fleet-wide sum of the summaries agents send in
// their heartbeats (sums only: no per-agent series). Metrics keeps them
// itself, from the heartbeats its gRPC interceptor sees.
type AgentSummarySource interface {
	AgentSummaryTotals() AgentTotals
}

// AgentTotals are the sums over the agents' last heartbeat summaries.
type AgentTotals struct {
	NodesRunning       int64
	RestartsTotal      int64
	CacheBytes         int64
	FetchFailuresTotal int64
	// MinCertExpiryUnix is the earliest agent certificate expiry (Unix
	// seconds); 0 when no agent reported one.
	MinCertExpiryUnix int64
}

var (
	agentsDesc = prometheus.NewDesc(Namespace+"_agents", "Registered agents by health (healthy, degraded, offline).", []string{"health"}, nil)
	nodesDesc  = prometheus.NewDesc(Namespace+"_nodes", "Storage node records by reported state (unknown: not reported yet) and whether they are desired.", []string{"state", "desired"}, nil)

	binariesDesc    = prometheus.NewDesc(Namespace+"_catalog_binaries", "Published binaries by artifact.", []string{"artifact"}, nil)
	hashingDesc     = prometheus.NewDesc(Namespace+"_catalog_hashing", "Binaries being hashed, not yet served.", nil, nil)
	hashedFilesDesc = prometheus.NewDesc(Namespace+"_catalog_hashed_files_total", "Files whose content the catalog read and hashed.", nil, nil)
	hashedBytesDesc = prometheus.NewDesc(Namespace+"_catalog_hashed_bytes_total", "Bytes the catalog read to hash binaries.", nil, nil)
	hashTimeDesc    = prometheus.NewDesc(Namespace+"_catalog_hash_seconds_total", "Time the catalog spent reading and hashing binaries.", nil, nil)
	cacheHitsDesc   = prometheus.NewDesc(Namespace+"_catalog_checksum_cache_hits_total", "Files registered from the checksum cache without reading them.", nil, nil)

	leaderDesc  = prometheus.NewDesc(Namespace+"_master_leader", "1 while this master leads the singletons (rollouts, the sweep of dead masters' agents, agent GC, compaction), else 0; with several masters exactly one should say 1.", nil, nil)
	mastersDesc = prometheus.NewDesc(Namespace+"_masters", "Masters alive, as this master sees them (1 with --store bbolt).", nil, nil)

	downloadsDesc = prometheus.NewDesc(Namespace+"_downloads_in_flight", "Binary downloads being served (beyond the cap they are refused 503).", nil, nil)

	rolloutsDesc      = prometheus.NewDesc(Namespace+"_rollouts", "Rollouts by state.", []string{"state"}, nil)
	rolloutAgentsDesc = prometheus.NewDesc(Namespace+"_rollout_agents", "Member agents of the active (pending, running, paused) rollouts by their rollout state.", []string{"state"}, nil)

	sumNodesDesc    = prometheus.NewDesc(Namespace+"_fleet_agent_nodes_running", "Sum over agents of the nodes running, from their heartbeat summaries.", nil, nil)
	sumRestartsDesc = prometheus.NewDesc(Namespace+"_fleet_agent_node_restarts", "Sum over agents of node restarts since each agent started, from their heartbeat summaries (a gauge: agents come and go).", nil, nil)
	sumCacheDesc    = prometheus.NewDesc(Namespace+"_fleet_agent_cache_bytes", "Sum over agents of their binary cache sizes, from their heartbeat summaries.", nil, nil)
	sumFetchDesc    = prometheus.NewDesc(Namespace+"_fleet_agent_fetch_failures", "Sum over agents of failed binary fetches since each agent started, from their heartbeat summaries.", nil, nil)
	certExpiryDesc  = prometheus.NewDesc(Namespace+"_tls_cert_expiry_timestamp_seconds", "Expiry (Unix seconds) of the master's certificates: cert=ca or server.", []string{"cert"}, nil)
	sumCertDesc     = prometheus.NewDesc(Namespace+"_fleet_agent_cert_expiry_timestamp_seconds", "Earliest agent certificate expiry (Unix seconds) among the agents' heartbeat summaries; absent when none reported.", nil, nil)
)

// Sources are the master's parts read at scrape time; nil ones are left out.
type Sources struct {
	Fleet     FleetSource
	Catalog   CatalogSource
	Downloads DownloadSource
	Certs     CertSource
	// Cluster is this master among the masters (master/cluster).
	Cluster ClusterSource
}

// ClusterSource is what the metrics read of master/cluster's Coordinator.
type ClusterSource interface {
	// Leading: this master leads the singletons now.
	Leading() bool
	// AliveMasters counts the masters alive now (from this master's view).
	AliveMasters() int
}

// sourceCollector reads the master's parts at scrape time.
type sourceCollector struct{ Sources }

// AddSources registers a collector reading s at scrape time.
func (m *Metrics) AddSources(s Sources) {
	m.reg.MustRegister(&sourceCollector{s})
}

func (s *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{agentsDesc, nodesDesc, binariesDesc, hashingDesc, hashedFilesDesc, hashedBytesDesc, hashTimeDesc,
		cacheHitsDesc, downloadsDesc, certExpiryDesc, leaderDesc, mastersDesc} {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
}

// nodeStates are the label values of sutra_nodes' state, a bounded set.
var nodeStates = []fleet.NodeState{fleet.NodeStarting, fleet.NodeRunning, fleet.NodeStopping, fleet.NodeStopped, fleet.NodeFailed, fleet.NodeBackoff}

func (s *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	if s.Certs != nil {
		if ca := s.Certs.CA(); ca != nil {
			gauge(ch, certExpiryDesc, float64(ca.NotAfter.Unix()), "ca")
		}
		if leaf := leafOf(s.Certs.ServerCertificate()); leaf != nil {
			gauge(ch, certExpiryDesc, float64(leaf.NotAfter.Unix()), "server")
		}
	}
	if s.Fleet != nil {
		c := s.Fleet.Cluster()
		gauge(ch, agentsDesc, float64(c.HealthyAgents), string(fleet.Healthy))
		gauge(ch, agentsDesc, float64(c.DegradedAgents), string(fleet.Degraded))
		gauge(ch, agentsDesc, float64(c.OfflineAgents), string(fleet.Offline))
		s.collectNodes(ch)
	}
	if s.Catalog != nil {
		byArtifact := map[string]int{}
		for _, b := range s.Catalog.List("") {
			byArtifact[b.Artifact]++
		}
		for a, n := range byArtifact {
			gauge(ch, binariesDesc, float64(n), a)
		}
		st := s.Catalog.Stats()
		gauge(ch, hashingDesc, float64(s.Catalog.Hashing()))
		counter(ch, hashedFilesDesc, float64(st.HashedFiles))
		counter(ch, hashedBytesDesc, float64(st.HashedBytes))
		counter(ch, hashTimeDesc, st.HashTime.Seconds())
		counter(ch, cacheHitsDesc, float64(st.CacheHits))
	}
	if s.Downloads != nil {
		gauge(ch, downloadsDesc, float64(s.Downloads.ActiveDownloads()))
	}
	if s.Cluster != nil {
		leading := 0.0
		if s.Cluster.Leading() {
			leading = 1
		}
		gauge(ch, leaderDesc, leading)
		gauge(ch, mastersDesc, float64(s.Cluster.AliveMasters()))
	}
}

func leafOf(c *tls.Certificate) *x509.Certificate {
	if c == nil {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	if len(c.Certificate) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

func (s *sourceCollector) collectNodes(ch chan<- prometheus.Metric) {
	nodes, err := s.Fleet.Nodes("")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(nodesDesc, err)
		return
	}
	type key struct {
		state   string
		desired bool
	}
	counts := map[key]int{}
	for _, st := range nodeStates {
		counts[key{string(st), true}] = 0
		counts[key{string(st), false}] = 0
	}
	for _, n := range nodes {
		st := "unknown"
		if n.Status != nil && fleet.ValidNodeState(n.Status.State) {
			st = string(n.Status.State)
		}
		counts[key{st, n.Desired}]++
	}
	for k, n := range counts {
		d := "false"
		if k.desired {
			d = "true"
		}
		gauge(ch, nodesDesc, float64(n), k.state, d)
	}
}
