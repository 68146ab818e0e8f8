package fleetapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
)

func serve(t *testing.T) (*httptest.Server, *fleet.Fleet) {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f, err := fleet.New(context.Background(), fleet.Options{Store: st, MasterVersion: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	New(f).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	for _, id := range []string{"a1", "a2"} {
		if _, err := f.Register(ctx, fleet.Registration{AgentID: id, Hostname: id + ".lan", Platform: "linux", Arch: "aarch64", MaxStorageNodes: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Spawn(ctx, fleet.SpawnRequest{AgentID: "a1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	return srv, f
}

func get(t *testing.T, srv *httptest.Server, method, path string, into any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if method != http.MethodHead && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%s %s: Content-Type %q, want application/json (body %s)", method, path, resp.Header.Get("Content-Type"), body)
	}
	if into != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, body, err)
		}
	}
	if resp.StatusCode >= 400 {
		var e httpjson.Error
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			t.Fatalf("%s %s: status %d without a JSON error body: %s", method, path, resp.StatusCode, body)
		}
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(body)
}

func TestReads(t *testing.T) {
	srv, _ := serve(t)
	var agents []fleet.Agent
	if code, _ := get(t, srv, "GET", "/api/agents", &agents); code != 200 || len(agents) != 2 || agents[0].ID != "a1" || agents[0].Health != fleet.Healthy {
		t.Fatalf("GET /api/agents = %d %+v", code, agents)
	}
	var a fleet.Agent
	if code, _ := get(t, srv, "GET", "/api/agents/a1", &a); code != 200 || a.Hostname != "a1.lan" || len(a.Desired.Nodes) != 1 {
		t.Fatalf("GET /api/agents/a1 = %d %+v", code, a)
	}
	var nodes []fleet.Node
	if code, _ := get(t, srv, "GET", "/api/nodes", &nodes); code != 200 || len(nodes) != 1 || nodes[0].ID != "n1" {
		t.Fatalf("GET /api/nodes = %d %+v", code, nodes)
	}
	if code, _ := get(t, srv, "GET", "/api/nodes?agent=a2", &nodes); code != 200 || len(nodes) != 0 {
		t.Fatalf("GET /api/nodes?agent=a2 = %d %+v, want []", code, nodes)
	}
	var n fleet.Node
	if code, _ := get(t, srv, "GET", "/api/nodes/n1", &n); code != 200 || n.AgentID != "a1" || !n.Desired {
		t.Fatalf("GET /api/nodes/n1 = %d %+v", code, n)
	}
	var c fleet.ClusterStatus
	if code, _ := get(t, srv, "GET", "/api/cluster", &c); code != 200 || c.Status != fleet.ClusterHealthy || c.TotalAgents != 2 || c.TotalNodes != 1 {
		t.Fatalf("GET /api/cluster = %d %+v", code, c)
	}
	var evs []fleet.Event
	if code, _ := get(t, srv, "GET", "/api/events", &evs); code != 200 || len(evs) != 3 || evs[2].Type != fleet.EventNodeSpawnRequested {
		t.Fatalf("GET /api/events = %d %+v", code, evs)
	}
	if code, _ := get(t, srv, "GET", "/api/events?since=1&limit=1", &evs); code != 200 || len(evs) != 1 || evs[0].Seq != 2 {
		t.Fatalf("GET /api/events?since=1&limit=1 = %d %+v", code, evs)
	}
	if code, body := get(t, srv, "GET", "/api/events?since=99", nil); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("GET /api/events?since=99 = %d %s, want []", code, body)
	}
	if code, _ := get(t, srv, "HEAD", "/api/cluster", nil); code != 200 {
		t.Fatalf("HEAD /api/cluster = %d", code)
	}
}

func TestErrors(t *testing.T) {
	srv, _ := serve(t)
	cases := []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/api/agents/ghost", 404, "sutra agents"},
		{"GET", "/api/nodes/ghost", 404, "sutra nodes"},
		{"GET", "/api/nodes?agent=ghost", 404, "not registered"},
		{"GET", "/api/nodes?agent=", 400, "empty"},
		{"GET", "/api/agents/" + strings.Repeat("x", 129), 400, "at most 128"},
		{"GET", "/api/agents/a%20b", 400, "use only"},
		{"GET", "/api/agents/a1/extra", 404, "no such resource"},
		{"GET", "/api/events?since=abc", 400, "sequence number"},
		{"GET", "/api/events?since=-1", 400, "sequence number"},
		{"GET", "/api/events?limit=0", 400, "1 to 1000"},
		{"GET", "/api/events?limit=1001", 400, "1 to 1000"},
		{"GET", "/api/events?limt=5", 400, "unknown query parameter"},
		{"GET", "/api/events?since=1&since=2", 400, "once"},
		{"GET", "/api/agents?x=1", 400, "takes none"},
		{"POST", "/api/agents", 405, "use GET"},
		{"DELETE", "/api/agents/a1", 405, "use GET"},
		{"PUT", "/api/nodes/n1", 405, "use GET"},
		{"POST", "/api/cluster", 405, "use GET"},
		{"POST", "/api/events", 405, "use GET"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s %s", c.method, c.path), func(t *testing.T) {
			code, msg := get(t, srv, c.method, c.path, nil)
			if code != c.code || !strings.Contains(msg, c.msg) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", c.method, c.path, code, msg, c.code, c.msg)
			}
		})
	}
}

func FuzzEventsQuery(f *testing.F) {
	st, err := store.OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	fl, err := fleet.New(context.Background(), fleet.Options{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	New(fl).Register(mux)
	for _, s := range []string{"since=1", "limit=5", "since=&limit=", "since=18446744073709551616", "a=b", "limit=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/api/events", nil)
		req.URL.RawQuery = q
		mux.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("GET /api/events?%s = %d, want 200 or 400", q, rec.Code)
		}
	})
}
