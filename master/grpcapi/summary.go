package grpcapi

import (
	"github.com/sutragrid/sutra/master/metrics"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// HeartbeatSummary is master/metrics' view of a heartbeat request: the
// agent id and its summary (nil when it sent none). ok is false for any
// other request.
func HeartbeatSummary(req any) (agentID string, sum *metrics.Summary, ok bool) {
	hb, ok := req.(*gridv1.HeartbeatRequest)
	if !ok {
		return "", nil, false
	}
	s := hb.GetSummary()
	if s == nil {
		return hb.GetAgentId(), nil, true
	}
	return hb.GetAgentId(), &metrics.Summary{
		NodesRunning:       s.GetNodesRunning(),
		RestartsTotal:      s.GetRestartsTotal(),
		CacheBytes:         s.GetCacheBytes(),
		FetchFailuresTotal: s.GetFetchFailuresTotal(),
		CertExpiryUnix:     s.GetCertExpiryUnix(),
	}, true
}
