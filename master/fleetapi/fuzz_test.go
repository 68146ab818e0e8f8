package fleetapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/httpserver"
	"github.com/sutragrid/sutra/master/store"
)

// fuzzRoutes are the starting points FuzzFleetAPI appends generated paths to:
// every fleet route, and a few near misses.
var fuzzRoutes = []string{
	"/api/agents", "/api/agents/", "/api/agents/a1", "/api/nodes", "/api/nodes/", "/api/nodes/n1",
	"/api/cluster", "/api/events", "/api/agents/a1/x", "/api/", "/", store.BackupPath,
}

// FuzzFleetAPI sends generated requests (method, path, query, body) through
// the master's HTTP handler chain (master/httpserver around a mux with the
// fleet routes, over a real fleet on bbolt) and asserts: no panic, no 5xx, a JSON
// {"error": "..."} body on every error, valid JSON on every GET answer, and
// no answer beyond the message limit.
func FuzzFleetAPI(f *testing.F) {
	seeds := []struct {
		method      string
		route       uint8
		path, query string
		body        []byte
	}{
		{"GET", 0, "", "", nil},
		{"GET", 0, "", "limit=0", nil},
		{"GET", 0, "", "limit=1001", nil},
		{"GET", 0, "", "limit=-1&page_token=", nil},
		{"GET", 0, "", "limit=99999999999999999999999", nil},
		{"GET", 0, "", "page_token=%00%ff", nil},
		{"GET", 0, "", "page_token=garbage&limit=1", nil},
		{"GET", 0, "", "limit=1&limit=2", nil},
		{"GET", 1, "..", "", nil},
		{"GET", 1, ".", "", nil},
		{"GET", 1, "-rf", "", nil},
		{"GET", 1, "%2e%2e", "", nil},
		{"GET", 1, strings.Repeat("a", 5000), "", nil},
		{"GET", 3, "", "agent=../..", nil},
		{"GET", 3, "", "agent=-rf&limit=1&page_token=", nil},
		{"GET", 3, "", "agent=%00", nil},
		{"GET", 4, "%00", "", nil},
		{"GET", 7, "", "since=-1", nil},
		{"GET", 7, "", "since=18446744073709551616", nil},
		{"GET", 7, "", "since=0&limit=1000&page_token=", nil},
		{"GET", 7, "", "since=abc", nil},
		{"GET", 6, "", "x=1", nil},
		{"HEAD", 0, "", "", nil},
		{"POST", 0, "", "", []byte(`{"agent_id":"x"}`)},
		{"DELETE", 2, "", "", nil},
		{"PUT", 5, "", "", bytes.Repeat([]byte("x"), 10000)},
		{"OPTIONS", 10, "", "", nil},
		{"GET", 8, "/y/z", "", nil},
		{"GET", 9, "binaries", "", nil},
		{"GET", 10, "/api//agents", "", nil},
		{"GET", 11, "", "", nil}, // /api/backup from the master's host
		{"GET", 23, "", "", nil}, // /api/backup from elsewhere: 403
		{"GET", 11, "", "x=1", nil},
		{"POST", 11, "", "", []byte("x")},
	}
	for _, s := range seeds {
		f.Add(s.method, s.route, s.path, s.query, s.body)
	}
	h := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, method string, route uint8, path, query string, body []byte) {
		target := fuzzRoutes[int(route)%len(fuzzRoutes)] + path
		if query != "" {
			target += "?" + query
		}
		raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: master\r\nContent-Length: %d\r\n\r\n%s", method, target, len(body), body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // the server answers requests it cannot parse itself, before any handler
		}
		if int(route)/len(fuzzRoutes)%2 == 0 {
			req.RemoteAddr = "127.0.0.1:40000" // the master's host: the backup route answers
		} else {
			req.RemoteAddr = "192.0.2.1:40000"
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		what := fmt.Sprintf("%s %q", req.Method, target)
		if res.StatusCode >= 500 {
			t.Fatalf("%s = %d %s: bad input must get a 4xx", what, res.StatusCode, rec.Body)
		}
		if rec.Body.Len() > limits.MaxMsgSize {
			t.Fatalf("%s: answer of %d bytes", what, rec.Body.Len())
		}
		if req.Method == http.MethodHead {
			return
		}
		if res.StatusCode == http.StatusOK && req.URL.Path == store.BackupPath {
			if _, err := store.Verify(writeTemp(t, rec.Body.Bytes())); err != nil {
				t.Fatalf("%s: the backup is not a sound database: %v", what, err)
			}
			return
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s = %d with Content-Type %q, want JSON: %s", what, res.StatusCode, ct, rec.Body)
		}
		if res.StatusCode >= 400 {
			var e httpjson.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s = %d %q, want a JSON {\"error\": ...} body", what, res.StatusCode, rec.Body)
			}
			return
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s = %d: invalid JSON %q", what, res.StatusCode, rec.Body)
		}
	})
}

// fuzzHandler is the master's handler chain over a small real fleet.
func fuzzHandler(tb testing.TB) http.Handler {
	tb.Helper()
	st, err := store.OpenDir(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	fl, err := fleet.New(context.Background(), fleet.Options{Store: st, MasterVersion: "1.0.0"})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"a1", "a2"} {
		if _, err := fl.Register(ctx, fleet.Registration{AgentID: id, Hostname: id + ".lan", Platform: "linux", Arch: "x86_64", MaxStorageNodes: 3}); err != nil {
			tb.Fatal(err)
		}
	}
	for _, n := range []string{"n1", "n2"} {
		if _, err := fl.Spawn(ctx, fleet.SpawnRequest{AgentID: "a1", NodeID: n}); err != nil {
			tb.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	New(fl).Register(mux)
	mux.Handle("GET "+store.BackupPath, store.BackupHandler(st, nil)) // as master/controlplane does
	return httpserver.Handler(mux, nil)
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
