package controlplane

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/retryinfo"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// throttlingMaster enrolls and registers agents like enrollMaster, keeps
// the agent's own heartbeat interval, and is served behind an interceptor
// that answers the first call of every method RESOURCE_EXHAUSTED with
// RetryInfo, as the master's rate limits do, recording when each call came.
type throttlingMaster struct {
	*enrollMaster
	delay time.Duration
	mu    sync.Mutex
	calls map[string][]time.Time
}

func (m *throttlingMaster) RegisterAgent(context.Context, *gridv1.RegisterAgentRequest) (*gridv1.RegisterAgentResponse, error) {
	return &gridv1.RegisterAgentResponse{Desired: &gridv1.DesiredState{Generation: 1}}, nil
}

func (m *throttlingMaster) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	m.mu.Lock()
	m.calls[info.FullMethod] = append(m.calls[info.FullMethod], time.Now())
	first := len(m.calls[info.FullMethod]) == 1
	m.mu.Unlock()
	if first {
		return nil, retryinfo.Error(m.delay, "rate limited: too many calls")
	}
	return h(ctx, req)
}

func (m *throttlingMaster) times(method string) []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.calls[method]...)
}

// Issue 12: the agent honours the master's rate limits. Enroll,
// RegisterAgent and Heartbeat answered RESOURCE_EXHAUSTED with a RetryInfo
// delay are retried no sooner than that delay, although the agent's own
// backoff (10 ms) and heartbeat interval (100 ms) are much shorter.
func TestAgentWaitsTheRetryInfoDelay(t *testing.T) {
	ca := newTestCA(t)
	const delay = time.Second
	m := &throttlingMaster{enrollMaster: &enrollMaster{ca: ca, t: t}, delay: delay, calls: map[string][]time.Time{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.serverTLS(t))), grpc.UnaryInterceptor(m.intercept))
	gridv1.RegisterGridMasterServer(srv, m)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{}, 4)
	opts := enrollOptions(ln.Addr().String(), filepath.Join(t.TempDir(), "tls"), tok.String(), registered)
	opts.HeartbeatInterval = 100 * time.Millisecond
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	heartbeats := gridv1.GridMaster_Heartbeat_FullMethodName
	deadline := time.Now().Add(30 * time.Second)
	for len(m.times(heartbeats)) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d heartbeats within 30s", len(m.times(heartbeats)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, method := range []string{gridv1.GridMaster_Enroll_FullMethodName, gridv1.GridMaster_RegisterAgent_FullMethodName, heartbeats} {
		ts := m.times(method)
		if len(ts) < 2 {
			t.Fatalf("%s: %d calls, want the refused one and a retry", method, len(ts))
		}
		if gap := ts[1].Sub(ts[0]); gap < delay {
			t.Errorf("%s retried %s after RESOURCE_EXHAUSTED with RetryInfo %s, want no sooner", method, gap.Round(time.Millisecond), delay)
		} else if gap > delay+delay/10+2*time.Second {
			t.Errorf("%s retried %s after RetryInfo %s, want about the delay plus jitter", method, gap.Round(time.Millisecond), delay)
		}
	}
	// Once answered, heartbeats are back at the agent's interval.
	ts := m.times(heartbeats)
	if gap := ts[3].Sub(ts[2]); gap > time.Second {
		t.Errorf("heartbeats after the throttling are %s apart, want about 100ms", gap)
	}
}
