package master_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/auth"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// metricsMaster is a real master (startMaster) with its HTTP address and
// operator token.
type metricsMaster struct {
	*runningMaster
	http, token string
}

func startMetricsMaster(t *testing.T, mod func(*master.Options)) *metricsMaster {
	t.Helper()
	var httpAddr, dataDir string
	m := startMaster(t, func(o *master.Options) {
		ready := o.Ready
		o.Ready = func(a master.Addrs) { httpAddr = a.HTTP; ready(a) }
		dataDir = o.DataDir
		if mod != nil {
			mod(o)
		}
	})
	tok, err := os.ReadFile(filepath.Join(dataDir, auth.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return &metricsMaster{runningMaster: m, http: "http://" + httpAddr, token: strings.TrimSpace(string(tok))}
}

// scrape GETs /metrics with token ("" for none): status, content type, body.
func (m *metricsMaster) scrape(t *testing.T, token string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", m.http+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func (m *metricsMaster) metrics(t *testing.T) string {
	t.Helper()
	code, _, body := m.scrape(t, m.token)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics with the operator token = %d: %s", code, body)
	}
	return body
}

// sample is the value of the first series of name carrying every label
// (k="v" pairs); ok false when there is none.
func sample(body, name string, labels ...string) (float64, bool) {
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if !all {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		return v, true
	}
	return 0, false
}

// names are the metric names in a scrape.
func names(body string) map[string]bool {
	out := map[string]bool{}
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			out[line[:i]] = true
		}
	}
	return out
}

// Issue 15: GET /metrics needs the operator token (401 JSON without it),
// counts agents by health after a real agent registered over mTLS, RPCs by
// method and code, heartbeats with their handling time, and HTTP requests
// by route pattern, never by raw path.
func TestMetricsEndpoint(t *testing.T) {
	m := startMetricsMaster(t, nil)

	code, ctype, body := m.scrape(t, "")
	if code != http.StatusUnauthorized || !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("GET /metrics without a token = %d %s, want 401 JSON: %s", code, ctype, body)
	}
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("401 body is not a JSON error: %q", body)
	}
	if code, _, _ := m.scrape(t, "wrong-token"); code != http.StatusUnauthorized {
		t.Fatalf("GET /metrics with a wrong token = %d, want 401", code)
	}

	body = m.metrics(t)
	if v, ok := sample(body, "sutra_build_info", `version="`, `goversion="go`); !ok || v != 1 {
		t.Fatalf("sutra_build_info{version,goversion} = %v %v, want 1:\n%s", v, ok, body)
	}
	if v, ok := sample(body, "sutra_agents", `health="healthy"`); !ok || v != 0 {
		t.Fatalf("sutra_agents{health=healthy} before any agent = %v %v, want 0", v, ok)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := m.agent(t, "metrics-a1")
	if _, err := a.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "metrics-a1", Hostname: "h1", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 2}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		sum := &gridv1.AgentSummary{NodesRunning: 2, RestartsTotal: 5, CacheBytes: 1000, FetchFailuresTotal: 1, CertExpiryUnix: 2000000000}
		if _, err := a.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "metrics-a1", Summary: sum}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.grid.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "metrics-a1"}); err != nil {
		t.Fatal(err)
	}
	// A call with the wrong identity: an agent heartbeating as another
	// (its summary is not counted).
	if _, err := a.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "someone-else", Summary: &gridv1.AgentSummary{NodesRunning: 100}}); err == nil {
		t.Fatal("heartbeat as another agent succeeded")
	}

	body = m.metrics(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		what   string
	}{
		{"sutra_agents", []string{`health="healthy"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_agents", []string{`health="offline"`}, func(v float64) bool { return v == 0 }, "0"},
		{"sutra_nodes", []string{`state="unknown"`, `desired="true"`}, func(v float64) bool { return v == 1 }, "1 (spawned, not reported yet)"},
		{"sutra_heartbeats_total", []string{`code="OK"`}, func(v float64) bool { return v == 3 }, "3"},
		{"sutra_heartbeats_total", []string{`code="PermissionDenied"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_heartbeat_handling_seconds_count", nil, func(v float64) bool { return v == 4 }, "4"},
		{"sutra_grpc_server_handled_total", []string{`grpc_method="Heartbeat"`, `grpc_code="OK"`}, func(v float64) bool { return v == 3 }, "3"},
		{"sutra_grpc_server_handled_total", []string{`grpc_method="Enroll"`, `grpc_code="OK"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_grpc_server_handled_total", []string{`grpc_method="ListAgents"`, `grpc_code="OK"`}, func(v float64) bool { return v == 0 }, "0 (initialized)"},
		{"sutra_grpc_server_handling_seconds_count", []string{`grpc_method="RegisterAgent"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_enrollments_total", []string{`result="ok"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_auth_failures_total", []string{`server="grpc"`}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"sutra_auth_failures_total", []string{`server="http"`}, func(v float64) bool { return v == 2 }, "2 (the two refused scrapes)"},
		{"sutra_http_requests_total", []string{`route="GET /metrics"`, `code="401"`}, func(v float64) bool { return v == 2 }, "2"},
		{"sutra_store_transaction_seconds_count", []string{`op="apply_if"`}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"sutra_fleet_agent_nodes_running", nil, func(v float64) bool { return v == 2 }, "2 (from the heartbeat summary)"},
		{"sutra_fleet_agent_node_restarts", nil, func(v float64) bool { return v == 5 }, "5"},
		{"sutra_fleet_agent_cache_bytes", nil, func(v float64) bool { return v == 1000 }, "1000"},
		{"sutra_fleet_agent_fetch_failures", nil, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_fleet_agent_cert_expiry_timestamp_seconds", nil, func(v float64) bool { return v == 2e9 }, "2e9"},
		{"sutra_events_total", []string{`type="AgentRegistered"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_events_total", []string{`type="NodeSpawnRequested"`}, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_rollouts", []string{`state="paused"`}, func(v float64) bool { return v == 0 }, "0 (no rollout)"},
		{"sutra_rollout_agents", []string{`state="failed"`}, func(v float64) bool { return v == 0 }, "0"},
		{"sutra_downloads_in_flight", nil, func(v float64) bool { return v == 0 }, "0"},
		{"sutra_master_leader", nil, func(v float64) bool { return v == 1 }, "1 (alone, it leads)"},
		{"sutra_masters", nil, func(v float64) bool { return v == 1 }, "1"},
		{"sutra_tls_cert_expiry_timestamp_seconds", []string{`cert="server"`}, func(v float64) bool { return v > float64(time.Now().Unix()) }, "in the future"},
		{"process_cpu_seconds_total", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"go_goroutines", nil, func(v float64) bool { return v > 0 }, "> 0"},
	} {
		v, ok := sample(body, c.name, c.labels...)
		if !ok || !c.want(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.what)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}

	// 100 requests to random paths: the route label set stays bounded.
	for i := range 100 {
		resp, err := http.Get(fmt.Sprintf("%s/random/%d/x%d", m.http, i, i*7919))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	body = m.metrics(t)
	routes := map[string]bool{}
	re := regexp.MustCompile(`^sutra_http_requests_total\{.*route="([^"]*)"`)
	for line := range strings.SplitSeq(body, "\n") {
		if g := re.FindStringSubmatch(line); g != nil {
			routes[g[1]] = true
		}
	}
	if len(routes) > 5 || !routes["unmatched"] {
		t.Fatalf("after 100 random paths the route labels are %v: want a few patterns, the random ones as \"unmatched\"", routes)
	}
	if v, _ := sample(body, "sutra_http_requests_total", `route="unmatched"`, `code="404"`); v != 100 {
		t.Fatalf("sutra_http_requests_total{route=unmatched,code=404} = %v, want 100", v)
	}
}

// --public-metrics: GET /metrics answers without the token.
func TestPublicMetrics(t *testing.T) {
	m := startMetricsMaster(t, func(o *master.Options) { o.PublicMetrics = true })
	code, ctype, body := m.scrape(t, "")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("GET /metrics without a token under PublicMetrics = %d %s, want 200 text: %.300s", code, ctype, body)
	}
	if _, ok := sample(body, "sutra_build_info"); !ok {
		t.Fatal("no sutra_build_info in the public scrape")
	}
	// The fleet routes still need the token.
	if code := get(t, m.http+"/api/agents", ""); code != http.StatusUnauthorized {
		t.Fatalf("GET /api/agents without a token = %d, want 401", code)
	}
}

// pendingHooks are metric names whose source is a hook nothing feeds yet;
// the alert rules and dashboard may use them already. Every other name
// must be in a real scrape. (Empty: every source is wired.)
var pendingHooks = map[string]bool{}

// promqlNames are the metric names in PromQL expressions: identifiers with
// the prefixes this project exports (sutra_, process_, go_), outside
// string literals (label values such as ".*/binaries/.*").
func promqlNames(expr string) []string {
	expr = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(expr, `""`)
	return regexp.MustCompile(`\b(?:sutra|process|go)_[a-zA-Z0-9_:]*`).FindAllString(expr, -1)
}

// The alert rules pass promtool check rules, the scrape passes promtool
// check metrics, and every metric the alert rules and the Grafana
// dashboard query exists in a real master's scrape.
func TestAlertsAndDashboardMatchTheScrape(t *testing.T) {
	alerts := filepath.Join("..", "packaging", "prometheus", "alerts.yml")
	dash := filepath.Join("..", "packaging", "grafana", "sutra-grid.json")
	promtool, lookErr := exec.LookPath("promtool")
	if lookErr == nil {
		if out, err := exec.Command(promtool, "check", "rules", alerts).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules %s: %v\n%s", alerts, err, out)
		}
	}

	const bin = "storage-server-1.0.0-linux-x86_64"
	m := startMetricsMaster(t, func(o *master.Options) {
		if err := os.MkdirAll(o.BinariesDir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(o.BinariesDir, bin)
		if err := os.WriteFile(p, []byte(strings.Repeat("binary\n", 1000)), 0o755); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour) // settled: registered at start-up
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code := get(t, m.http+"/binaries/"+bin, ""); code != http.StatusOK {
		t.Fatalf("download = %d", code)
	}
	a := m.agent(t, "scrape-a1")
	if _, err := a.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "scrape-a1", Hostname: "h1", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "scrape-a1", Summary: &gridv1.AgentSummary{NodesRunning: 1, CertExpiryUnix: time.Now().Add(24 * time.Hour).Unix()}}); err != nil {
		t.Fatal(err)
	}
	body := m.metrics(t)
	have := names(body)
	if v, _ := sample(body, "sutra_downloads_total", `artifact="storage-server"`); v != 1 {
		t.Errorf("sutra_downloads_total{artifact=storage-server} = %v, want 1", v)
	}
	if v, _ := sample(body, "sutra_catalog_hashed_bytes_total"); v != 7000 {
		t.Errorf("sutra_catalog_hashed_bytes_total = %v, want 7000", v)
	}
	if v, ok := sample(body, "sutra_catalog_hash_seconds_total"); !ok || v <= 0 {
		t.Errorf("sutra_catalog_hash_seconds_total = %v (%v), want > 0", v, ok)
	}
	if v, _ := sample(body, "sutra_download_bytes_total", `artifact="storage-server"`); v != 7000 {
		t.Errorf("sutra_download_bytes_total{artifact=storage-server} = %v, want 7000", v)
	}

	var exprs []string
	raw, err := os.ReadFile(alerts)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range regexp.MustCompile(`(?m)^\s*expr:\s*(.+)$`).FindAllStringSubmatch(string(raw), -1) {
		exprs = append(exprs, g[1])
	}
	if len(exprs) < 4 {
		t.Fatalf("only %d alert expressions found in %s", len(exprs), alerts)
	}
	djs, err := os.ReadFile(dash)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(djs, &d); err != nil {
		t.Fatalf("%s: %v", dash, err)
	}
	nd := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			nd++
		}
	}
	if nd < 10 {
		t.Fatalf("only %d queries in %s", nd, dash)
	}
	checked := 0
	for _, e := range exprs {
		ns := promqlNames(e)
		if len(ns) == 0 {
			t.Errorf("no metric name found in %q", e)
		}
		for _, n := range ns {
			checked++
			if !have[n] && !pendingHooks[n] {
				t.Errorf("%q uses %s, which a real master's scrape does not have", e, n)
			}
		}
	}
	for n := range pendingHooks {
		if have[n] {
			t.Errorf("%s is in the scrape now: remove it from pendingHooks", n)
		}
	}
	t.Logf("%d expressions, %d metric names checked against a scrape of %d names", len(exprs), checked, len(have))

	if lookErr != nil {
		t.Skipf("promtool not found (apt-get install prometheus): the rules and the scrape's lint were not checked by promtool")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
