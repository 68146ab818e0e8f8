package controlplane

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/agent/metrics"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// summaryMaster records the summaries heartbeats carry and refuses every
// heartbeat.
type summaryMaster struct {
	enrollMaster
	mu        sync.Mutex
	summaries []*gridv1.AgentSummary
}

func (m *summaryMaster) RegisterAgent(context.Context, *gridv1.RegisterAgentRequest) (*gridv1.RegisterAgentResponse, error) {
	return &gridv1.RegisterAgentResponse{HeartbeatIntervalSecs: 1, Desired: &gridv1.DesiredState{Generation: 1}}, nil
}

func (m *summaryMaster) Heartbeat(_ context.Context, r *gridv1.HeartbeatRequest) (*gridv1.HeartbeatResponse, error) {
	m.mu.Lock()
	m.summaries = append(m.summaries, r.GetSummary())
	m.mu.Unlock()
	return nil, status.Error(codes.Unavailable, "busy")
}

// Issue 15: every heartbeat carries Options.Summary, and a failed one is
// reported to OnHeartbeatFailed (the agent's heartbeats_total{result=failed}).
func TestHeartbeatSummaryAndFailures(t *testing.T) {
	ca := newTestCA(t)
	m := &summaryMaster{enrollMaster: enrollMaster{ca: ca, t: t}}
	addr := startTLSFakeMaster(t, ca, m)
	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	opts := enrollOptions(addr, filepath.Join(t.TempDir(), "tls"), tok.String(), make(chan struct{}, 16))
	opts.Summary = func() metrics.Summary { return metrics.Summary{NodesRunning: 7, CacheBytes: 42} }
	failed := make(chan error, 16)
	opts.OnHeartbeatFailed = func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case err := <-failed:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("OnHeartbeatFailed(%v), want the UNAVAILABLE answer", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no failed heartbeat reported within 20s")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.summaries) == 0 || m.summaries[0].GetNodesRunning() != 7 || m.summaries[0].GetCacheBytes() != 42 {
		t.Fatalf("heartbeat summaries = %v, want the agent's", m.summaries)
	}
}
