package metrics

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/store"
)

// Summaries: only successful heartbeats count, values are clamped, an
// implausible certificate expiry is ignored, stale summaries expire and
// the number kept is bounded.
func TestAgentSummaries(t *testing.T) {
	s := newSummaries()
	now := time.Unix(1_800_000_000, 0)
	s.now = func() time.Time { return now }
	s.record("a1", &Summary{NodesRunning: 2, RestartsTotal: math.MaxUint64, CacheBytes: 10, CertExpiryUnix: 1_900_000_000})
	s.record("a2", &Summary{NodesRunning: 1, CertExpiryUnix: -5})
	s.record("a3", &Summary{NodesRunning: 1, CertExpiryUnix: 1_850_000_000})
	s.record("a3", nil) // a3 stopped sending summaries: forgotten
	got := s.AgentSummaryTotals()
	if got.NodesRunning != 3 || got.RestartsTotal != maxSummaryValue || got.CacheBytes != 10 || got.MinCertExpiryUnix != 1_900_000_000 {
		t.Fatalf("totals = %+v", got)
	}
	now = now.Add(summaryTTL + time.Second)
	if got := s.AgentSummaryTotals(); got != (AgentTotals{}) || len(s.byAgent) != 0 {
		t.Fatalf("stale summaries still counted: %+v (%d kept)", got, len(s.byAgent))
	}
	for i := range maxSummaries + 10 {
		s.record(string(rune('a'+i%26))+strings.Repeat("x", i%7)+string(rune(i)), &Summary{NodesRunning: 1})
	}
	if len(s.byAgent) > maxSummaries {
		t.Fatalf("%d summaries kept, cap %d", len(s.byAgent), maxSummaries)
	}
}

// The interceptor counts heartbeats by code, records only the summary of a
// heartbeat that succeeded, counts enrollments, auth failures and rate
// limit refusals (not every RESOURCE_EXHAUSTED).
func TestInterceptorCounters(t *testing.T) {
	m := New("test").WithHeartbeatSummary(testSummaryOf)
	in := m.UnaryServerInterceptor()
	call := func(method string, req any, err error) {
		_, _ = in(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) { return nil, err })
	}
	sum := &Summary{NodesRunning: 5}
	call(heartbeatMethod, testHeartbeat{"a", sum}, nil)
	call(heartbeatMethod, testHeartbeat{"b", sum}, status.Error(codes.PermissionDenied, "not you"))
	call(enrollMethod, nil, status.Error(codes.Unauthenticated, "bad token"))
	call(enrollMethod, nil, nil)
	call("/grid.v1.GridMaster/ListAgents", nil, status.Error(codes.ResourceExhausted, "rate limited: too many"))
	call("/grid.v1.GridMaster/ListAgents", nil, status.Error(codes.ResourceExhausted, "message too large"))
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.heartbeats.WithLabelValues("OK")), 1, "heartbeats OK"},
		{testutil.ToFloat64(m.heartbeats.WithLabelValues("PermissionDenied")), 1, "heartbeats PermissionDenied"},
		{testutil.ToFloat64(m.enrollments.WithLabelValues("ok")), 1, "enrollments ok"},
		{testutil.ToFloat64(m.enrollments.WithLabelValues("failed")), 1, "enrollments failed"},
		{testutil.ToFloat64(m.authFailures.WithLabelValues("grpc")), 2, "auth failures"},
		{testutil.ToFloat64(m.rateLimited.WithLabelValues("grpc")), 1, "rate limited"},
		{float64(m.summaries.AgentSummaryTotals().NodesRunning), 5, "summed nodes (only a's)"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	m.ObserveHTTP("", "BREW", 999, 0, time.Millisecond)
	m.ObserveHTTP("GET /metrics", "GET", http.StatusTooManyRequests, 10, time.Millisecond)
	if v := testutil.ToFloat64(m.httpRequests.WithLabelValues(UnmatchedRoute, "OTHER", "other")); v != 1 {
		t.Errorf("odd method and code = %v, want counted as OTHER/other", v)
	}
	if v := testutil.ToFloat64(m.rateLimited.WithLabelValues("http")); v != 1 {
		t.Errorf("HTTP 429 rate limited = %v, want 1", v)
	}
}

// FuzzAgentSummary: hostile summaries from agents never panic, never make
// a sum negative and keep every value within its clamp.
func FuzzAgentSummary(f *testing.F) {
	f.Add("a1", uint32(1), uint64(2), uint64(3), int64(4), uint64(5))
	f.Add("", uint32(math.MaxUint32), uint64(math.MaxUint64), uint64(math.MaxUint64), int64(math.MinInt64), uint64(math.MaxUint64))
	f.Add(strings.Repeat("x", 1000), uint32(0), uint64(0), uint64(0), int64(math.MaxInt64), uint64(0))
	f.Fuzz(func(t *testing.T, id string, running uint32, restarts, cache uint64, expiry int64, fetch uint64) {
		s := newSummaries()
		for i := range 3 {
			s.record(id+string(rune('a'+i)), &Summary{NodesRunning: running, RestartsTotal: restarts, CacheBytes: cache, CertExpiryUnix: expiry, FetchFailuresTotal: fetch})
		}
		got := s.AgentSummaryTotals()
		for _, v := range []int64{got.NodesRunning, got.RestartsTotal, got.CacheBytes, got.FetchFailuresTotal} {
			if v < 0 || v > 3*maxSummaryValue {
				t.Fatalf("sum out of range: %+v", got)
			}
		}
		if got.MinCertExpiryUnix != 0 && (got.MinCertExpiryUnix <= minExpiryUnix || got.MinCertExpiryUnix >= maxExpiryUnix) {
			t.Fatalf("implausible expiry kept: %d", got.MinCertExpiryUnix)
		}
	})
}

// BenchmarkInterceptor is the metrics layer's cost on one heartbeat call
// (compare BenchmarkNoInterceptor: the bare handler).
func BenchmarkInterceptor(b *testing.B) {
	m := New("bench").WithHeartbeatSummary(testSummaryOf)
	in := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: heartbeatMethod}
	req := testHeartbeat{"a1", &Summary{NodesRunning: 3}}
	h := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = in(ctx, req, info, h)
		}
	})
}

// Events are counted by type from the event records the fleet commits;
// odd or too many types fold into "other".
func TestEventCounter(t *testing.T) {
	e := newEventCounter()
	e.count([]store.Op{
		store.Put(store.TableEvents, []byte("1"), []byte(`{"seq":1,"type":"AgentRegistered"}`)),
		store.Put(store.TableAgents, []byte("a"), []byte(`{"type":"NotAnEvent"}`)),
		store.Put(store.TableEvents, []byte("2"), []byte(`{"type":"bad type {}"}`)),
		store.Put(store.TableEvents, []byte("3"), []byte(`garbage`)),
		store.Delete(store.TableEvents, []byte("1")),
	})
	if v := testutil.ToFloat64(e.total.WithLabelValues("AgentRegistered")); v != 1 {
		t.Errorf("AgentRegistered = %v, want 1", v)
	}
	if v := testutil.ToFloat64(e.total.WithLabelValues(otherEventType)); v != 2 {
		t.Errorf("other = %v, want 2", v)
	}
	for i := range maxEventTypes + 10 {
		e.types.label(fmt.Sprintf("T%d", i))
	}
	if len(e.types.names) > maxEventTypes {
		t.Errorf("%d types kept, cap %d", len(e.types.names), maxEventTypes)
	}
}

// FuzzEventLabel: whatever an event record holds, its label is a bounded,
// plausible type name or "other".
func FuzzEventLabel(f *testing.F) {
	for _, s := range []string{`{"type":"NodeCrashed"}`, `{"type":""}`, `{"type":"` + strings.Repeat("A", 100) + `"}`, `{"type":"a\u0000b"}`, `null`, `[]`, `{"type":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		e := newEventCounter()
		l := e.types.label(eventType(value))
		if l != otherEventType && !validEventType(l) {
			t.Fatalf("label %q", l)
		}
		e.count([]store.Op{store.Put(store.TableEvents, []byte("k"), value)})
	})
}

// Downloads: served and bytes by artifact (bounded), refusals by a fixed
// set of reasons.
func TestDownloadCounters(t *testing.T) {
	m := New("test")
	m.DownloadServed("storage-server", 100)
	m.DownloadServed("storage-server", 0)
	m.DownloadServed("bad artifact name!", 5)
	m.DownloadRefused("busy")
	m.DownloadRefused("whatever")
	for _, c := range []struct {
		got, want float64
		what      string
	}{
		{testutil.ToFloat64(m.downloads.served.WithLabelValues("storage-server")), 2, "served"},
		{testutil.ToFloat64(m.downloads.bytes.WithLabelValues("storage-server")), 100, "bytes"},
		{testutil.ToFloat64(m.downloads.bytes.WithLabelValues(otherEventType)), 5, "bytes other"},
		{testutil.ToFloat64(m.downloads.refused.WithLabelValues("busy")), 1, "refused busy"},
		{testutil.ToFloat64(m.downloads.refused.WithLabelValues(otherEventType)), 1, "refused other"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

// Rollouts through the hook: by state, and agents of active rollouts.
func TestRolloutHook(t *testing.T) {
	m := New("test")
	m.AddSources(Sources{})
	m.AddRollouts(RolloutCountsFunc(func() (map[string]int, map[string]int) {
		return map[string]int{"paused": 1, "completed": 3, "bad state!": 1}, map[string]int{"failed": 2}
	}))
	n, err := testutil.GatherAndCount(m.Registry(), "sutra_rollouts", "sutra_rollout_agents")
	if err != nil || n != 3 {
		t.Fatalf("rollout series = %d (%v), want 3", n, err)
	}
}

// testHeartbeat stands for a heartbeat request (master/grpcapi converts the
// real one; this package does not know the wire types).
type testHeartbeat struct {
	agent string
	sum   *Summary
}

func testSummaryOf(req any) (string, *Summary, bool) {
	hb, ok := req.(testHeartbeat)
	return hb.agent, hb.sum, ok
}
