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
		{"GET", "/api/agents/" + strings.Repeat("x", 129), 400, "128"},
		{"GET", "/api/agents/a%20b", 400, `"a b"`},
		{"GET", "/api/agents/a1/extra", 404, "no such resource"},
		{"GET", "/api/events?since=abc", 400, "sequence number"},
		{"GET", "/api/events?since=-1", 400, "sequence number"},
		{"GET", "/api/events?limit=0", 400, "1 to 1000"},
		{"GET", "/api/events?limit=1001", 400, "1 to 1000"},
		{"GET", "/api/events?limt=5", 400, "unknown query parameter"},
		{"GET", "/api/events?since=1&since=2", 400, "once"},
		{"GET", "/api/agents?x=1", 400, "accepted: limit, page_token"},
		{"GET", "/api/cluster?x=1", 400, "takes none"},
		{"GET", "/api/agents?limit=0", 400, "1 to 1000"},
		{"GET", "/api/agents?limit=1001", 400, "1 to 1000"},
		{"GET", "/api/agents?limit=ten", 400, "1 to 1000"},
		{"GET", "/api/agents?page_token=%21%21", 400, "page token"},
		{"GET", "/api/agents?page_token=" + strings.Repeat("A", 4000), 400, "page token"},
		{"GET", "/api/nodes?limit=-1", 400, "1 to 1000"},
		{"GET", "/api/nodes?page_token=zzz", 400, "page token"},
		{"GET", "/api/events?page_token=QQ", 400, "page token"},
		{"GET", "/api/events?since=3&page_token=RTM", 400, "both"},
		{"GET", "/api/agents?page_token=a&page_token=b", 400, "once"},
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

// Issue 9 item 7: the HTTP lists page with ?limit and ?page_token.
func TestListPaging(t *testing.T) {
	srv, f := serve(t)
	ctx := context.Background()
	for i := range 250 {
		id := fmt.Sprintf("b%03d", i)
		if _, err := f.Register(ctx, fleet.Registration{AgentID: id, Platform: "linux", Arch: "x86_64", MaxStorageNodes: 1,
			Nodes: []fleet.NodeStatus{{NodeID: id + "-n", State: fleet.NodeRunning}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Unpaged clients get the first page in the old shape, and the header.
	var arr []fleet.Agent
	resp, err := srv.Client().Get(srv.URL + "/api/agents")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&arr); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(arr) != 100 || arr[0].ID != "a1" || resp.Header.Get("Next-Page-Token") == "" {
		t.Fatalf("GET /api/agents = %d agents (first %q), Next-Page-Token %q; want 100 from a1 and a token", len(arr), arr[0].ID, resp.Header.Get("Next-Page-Token"))
	}
	// Paged clients follow next_page_token to the end.
	for _, c := range []struct {
		path, key string
		want      int
	}{{"/api/agents", "agents", 252}, {"/api/nodes", "nodes", 251}, {"/api/events", "events", 753}} {
		seen := map[string]bool{}
		tok, pages := "", 0
		for {
			var pg map[string]json.RawMessage
			code, body := get(t, srv, "GET", c.path+"?limit=40&page_token="+tok, &pg)
			if code != 200 {
				t.Fatalf("GET %s page %d = %d %s", c.path, pages+1, code, body)
			}
			pages++
			var items []map[string]any
			if err := json.Unmarshal(pg[c.key], &items); err != nil || len(items) > 40 {
				t.Fatalf("GET %s: %d items (%v), want at most 40 under %q", c.path, len(items), err, c.key)
			}
			for _, it := range items {
				k := fmt.Sprint(it["agent_id"], it["node_id"], it["seq"])
				if seen[k] {
					t.Fatalf("GET %s: %s listed twice", c.path, k)
				}
				seen[k] = true
			}
			if err := json.Unmarshal(pg["next_page_token"], &tok); err != nil {
				t.Fatalf("GET %s: next_page_token: %v", c.path, err)
			}
			if tok == "" {
				break
			}
			if pages > 100 {
				t.Fatalf("GET %s never ends", c.path)
			}
		}
		if len(seen) != c.want {
			t.Fatalf("GET %s paged through %d items, want %d", c.path, len(seen), c.want)
		}
	}
	// The old events query still answers an array.
	var evs []fleet.Event
	if code, _ := get(t, srv, "GET", "/api/events?since=500&limit=2", &evs); code != 200 || len(evs) != 2 || evs[0].Seq != 501 {
		t.Fatalf("GET /api/events?since=500&limit=2 = %d %+v", code, evs)
	}
}

func FuzzListQuery(f *testing.F) {
	st, err := store.OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	fl, err := fleet.New(context.Background(), fleet.Options{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := fl.Register(context.Background(), fleet.Registration{AgentID: id, Platform: "linux", Arch: "x86_64", MaxStorageNodes: 1,
			Nodes: []fleet.NodeStatus{{NodeID: id + "n", State: fleet.NodeRunning}}}); err != nil {
			f.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	New(fl).Register(mux)
	for _, s := range []string{"limit=1", "limit=1&page_token=", "page_token=QWE", "page_token=TgBhAGFu", "page_token=%00", "limit=99999999999999999999",
		"agent=a&page_token=TmEAYQBhbg", "page_token=RTE4NDQ2NzQ0MDczNzA5NTUxNjE1", "page_token=" + strings.Repeat("QQ", 600)} {
		for _, p := range []string{"/api/agents", "/api/nodes", "/api/events"} {
			f.Add(p, s)
		}
	}
	f.Fuzz(func(t *testing.T, path, q string) {
		switch path {
		case "/api/agents", "/api/nodes", "/api/events":
		default:
			return
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", path, nil)
		req.URL.RawQuery = q
		mux.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 && !(rec.Code == 404 && path == "/api/nodes") {
			t.Fatalf("GET %s?%s = %d, want 200 or 400", path, q, rec.Code)
		}
		if rec.Body.Len() > 1<<20 {
			t.Fatalf("GET %s?%s answered %d bytes", path, q, rec.Body.Len())
		}
	})
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
