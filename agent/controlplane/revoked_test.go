package controlplane

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// revokedMaster enrolls and registers the agent, then refuses every
// heartbeat as the real master does once the agent is revoked.
type revokedMaster struct {
	enrollMaster
	hbMu sync.Mutex
	hbs  []time.Time
}

func (m *revokedMaster) RegisterAgent(context.Context, *gridv1.RegisterAgentRequest) (*gridv1.RegisterAgentResponse, error) {
	return &gridv1.RegisterAgentResponse{HeartbeatIntervalSecs: 1, Desired: &gridv1.DesiredState{Generation: 1}}, nil
}

func (m *revokedMaster) Heartbeat(context.Context, *gridv1.HeartbeatRequest) (*gridv1.HeartbeatResponse, error) {
	m.hbMu.Lock()
	m.hbs = append(m.hbs, time.Now())
	m.hbMu.Unlock()
	return nil, status.Error(codes.PermissionDenied, "agent a1's certificate was revoked at 2026-01-01T00:00:00Z by operator@10.0.0.1; to bring it back, an operator runs 'sutra agents unrevoke a1', then the agent enrolls again with a new join token")
}

func (m *revokedMaster) beats() []time.Time {
	m.hbMu.Lock()
	defer m.hbMu.Unlock()
	return append([]time.Time(nil), m.hbs...)
}

// Issue 12: a revoked agent does not spin: it retries (and logs one error
// line saying how to bring it back) once per revokedRetry, not every
// heartbeat, and keeps running (its nodes untouched: no desired state
// change is delivered).
func TestRevokedAgentBacksOff(t *testing.T) {
	ca := newTestCA(t)
	m := &revokedMaster{enrollMaster: enrollMaster{ca: ca, t: t}}
	addr := startTLSFakeMaster(t, ca, m)
	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	registered := make(chan struct{}, 4)
	opts := enrollOptions(addr, filepath.Join(t.TempDir(), "tls"), tok.String(), registered)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var desiredMu sync.Mutex
	desired := 0
	opts.OnDesired = func(Desired) { desiredMu.Lock(); desired++; desiredMu.Unlock() }
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	const retry = 1500 * time.Millisecond // above the 1 s heartbeat interval
	c.revokedRetry = retry
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.After(20 * time.Second)
	for len(m.beats()) < 3 {
		select {
		case err := <-done:
			t.Fatalf("Run returned while revoked: %v", err)
		case <-deadline:
			t.Fatalf("%d heartbeats within 20s", len(m.beats()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	hbs := m.beats()
	for i := 1; i < len(hbs); i++ {
		if gap := hbs[i].Sub(hbs[i-1]); gap < retry {
			t.Errorf("heartbeat %d came %s after the previous one while revoked, want at least %s", i+1, gap, retry)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "level=ERROR"); n < 2 || n > len(hbs) {
		t.Errorf("%d error lines for %d refused heartbeats, want one per attempt:\n%s", n, len(hbs), out)
	}
	if !strings.Contains(out, "certificate was revoked") || !strings.Contains(out, "sutra agents unrevoke") || !strings.Contains(out, "nodes keep running") {
		t.Errorf("the log does not say the agent is revoked and how to bring it back:\n%s", out)
	}
	if strings.Contains(out, "heartbeat failed") {
		t.Errorf("a revocation is logged as an ordinary heartbeat failure:\n%s", out)
	}
	desiredMu.Lock()
	defer desiredMu.Unlock()
	if desired != 1 {
		t.Errorf("desired state delivered %d times, want once (at registration): a revocation must not change the nodes", desired)
	}
}
