package httpserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type seen struct {
	mu     sync.Mutex
	routes []string
	codes  []int
	bytes  []int64
}

func (s *seen) ObserveHTTP(route, _ string, code int, bytes int64, _ time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes, s.codes, s.bytes = append(s.routes, route), append(s.codes, code), append(s.bytes, bytes)
}

// patterns are the routes of the test mux.
var patterns = []string{"GET /api/agents", "/api/agents/", "/binaries/", "GET /metrics"}

func observedServer(obs Observer) *http.Server {
	mux := http.NewServeMux()
	for _, p := range patterns {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "panic") {
				panic("handler bug")
			}
			_, _ = w.Write([]byte("hello"))
		})
	}
	return New(Options{Routes: mux, Observer: obs})
}

// Every answer is observed with the mux pattern as its route (never the
// raw path), its status (404s, 400s and recovered panics included) and
// its body bytes.
func TestObserveRoutes(t *testing.T) {
	obs := &seen{}
	srv := httptest.NewServer(observedServer(obs).Handler)
	defer srv.Close()
	for _, c := range []struct {
		path, route string
		code        int
	}{
		{"/api/agents", "GET /api/agents", 200},
		{"/api/agents/a1/nodes", "/api/agents/", 200},
		{"/binaries/x/panic", "/binaries/", 500},
		{"/nowhere/123", "", 404},
		{"/api/../etc", "", 400},
	} {
		req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
		req.URL.Opaque = c.path // keep ".." as sent
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		obs.mu.Lock()
		route, code, n := obs.routes[len(obs.routes)-1], obs.codes[len(obs.codes)-1], obs.bytes[len(obs.bytes)-1]
		obs.mu.Unlock()
		if route != c.route || code != c.code || resp.StatusCode != c.code || n <= 0 {
			t.Errorf("GET %s: observed route %q code %d bytes %d (answer %d), want %q %d", c.path, route, code, n, resp.StatusCode, c.route, c.code)
		}
	}
}

// FuzzObservedRoute: whatever the method and path, the observed route is
// one of the registered patterns or "" (bounded label values).
func FuzzObservedRoute(f *testing.F) {
	for _, s := range []string{"/api/agents", "/api/agents/x", "/binaries/../../etc/passwd", "//", "/%00", "/metrics", "/" + strings.Repeat("a/", 500)} {
		f.Add("GET", s)
	}
	f.Add("BREW", "/metrics")
	f.Add("POST", "/api/agents")
	h := observedServer(nil).Handler // the chain without observer, wrapped below
	f.Fuzz(func(t *testing.T, method, path string) {
		obs := &seen{}
		mux := http.NewServeMux()
		for _, p := range patterns {
			mux.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Method, req.URL.Path = method, path
		observe(obs, mux, h).ServeHTTP(httptest.NewRecorder(), req)
		if len(obs.routes) != 1 {
			t.Fatalf("%d observations", len(obs.routes))
		}
		r := obs.routes[0]
		if r != "" && !contains(patterns, r) {
			t.Fatalf("route %q for %s %q is not a registered pattern", r, method, path)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
