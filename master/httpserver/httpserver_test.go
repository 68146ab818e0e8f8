package httpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/testutil"
)

// serve runs New on a real loopback listener, as the master does.
func serve(t *testing.T, mux *http.ServeMux, log *slog.Logger) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Routes: mux, Logger: log, ReadHeaderTimeout: 5 * time.Second})
	go func() { _ = srv.Serve(httpjson.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	mux.HandleFunc("GET /abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	mux.HandleFunc("GET /api/things", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Route", "things")
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, "plain answer of the route")
	})
	mux.HandleFunc("POST /api/things", func(w http.ResponseWriter, r *http.Request) {})
	return mux
}

type answer struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, method, url string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// jsonError checks a is JSON {"error": "..."} and returns the message.
func (a answer) jsonError(t *testing.T) string {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("answer %d has Content-Type %q, want application/json (body %q)", a.status, ct, a.body)
	}
	var e map[string]string
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || e["error"] == "" || len(e) != 1 {
		t.Errorf(`body %q, want {"error": "..."}`, a.body)
	}
	return e["error"]
}

// Moved from binapi (issue 11 item 3): the chain every API sits behind.
func TestHandlerAnswers(t *testing.T) {
	url := serve(t, routes(), nil)
	for _, tt := range []struct {
		method, path string
		status       int
		msg          string // in the JSON error; "" for a route's own answer
	}{
		{"GET", "/api/things", http.StatusTeapot, ""},
		{"GET", "/api/nothing", 404, "no such route: GET /api/nothing"},
		{"GET", "/", 404, "no such route: GET /"},
		{"DELETE", "/api/things", 405, "method DELETE is not allowed on /api/things (allowed: GET, HEAD, POST)"},
		{"GET", "/api/../api/things", 400, `path "/api/../api/things" is not canonical`},
		{"GET", "/api//things", 400, `path "/api//things" is not canonical`},
		{"GET", "/api/./things", 400, "is not canonical"},
		{"GET", "/api/things%00", 400, "is not canonical"},
		{"GET", "/boom", 500, "internal error (logged by the master)"},
	} {
		a := get(t, tt.method, url+tt.path)
		if a.status != tt.status {
			t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, a.status, a.body, tt.status)
			continue
		}
		if tt.msg == "" {
			if a.body != "plain answer of the route" || a.header.Get("X-Route") != "things" {
				t.Errorf("%s %s = %q (X-Route %q): the route's own answer was changed", tt.method, tt.path, a.body, a.header.Get("X-Route"))
			}
			continue
		}
		if msg := a.jsonError(t); !strings.Contains(msg, tt.msg) {
			t.Errorf("%s %s: error %q, want it to contain %q", tt.method, tt.path, msg, tt.msg)
		}
		if tt.status == 405 && a.header.Get("Allow") != "GET, HEAD, POST" {
			t.Errorf("%s %s: Allow %q, want \"GET, HEAD, POST\"", tt.method, tt.path, a.header.Get("Allow"))
		}
	}
}

func TestHandlerRecoversPanics(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	url := serve(t, routes(), slog.New(slog.NewTextHandler(logs, nil)))
	for range 2 {
		a := get(t, "GET", url+"/boom")
		if a.status != 500 {
			t.Fatalf("panicking handler = %d %s, want 500 JSON", a.status, a.body)
		}
		a.jsonError(t)
	}
	if a := get(t, "GET", url+"/api/things"); a.status != http.StatusTeapot {
		t.Errorf("after two panics GET /api/things = %d, want the server still serving", a.status)
	}
	for _, want := range []string{"panic serving a request", "method=GET", "path=/boom", "panic=boom", "httpserver_test.go"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q (the panic and its stack):\n%s", want, logs)
		}
	}
}

// http.ErrAbortHandler keeps its meaning: the connection is cut, no 500
// is written and nothing is logged as a bug.
func TestHandlerPassesAbort(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	url := serve(t, routes(), slog.New(slog.NewTextHandler(logs, nil)))
	resp, err := http.Get(url + "/abort")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET /abort = %d, want the connection cut", resp.StatusCode)
	}
	if strings.Contains(logs.String(), "panic serving a request") {
		t.Errorf("an aborted handler was logged as a panic:\n%s", logs)
	}
}

// New bounds request headers; net/http's 431 is JSON through httpjson.Listener.
func TestNewBoundsHeaders(t *testing.T) {
	url := serve(t, routes(), nil)
	req, _ := http.NewRequest("GET", url+"/api/things", nil)
	req.Header.Set("X-Long", strings.Repeat("a", 2*MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET with %d header bytes = %d, want 431", 2*MaxHeaderBytes, resp.StatusCode)
	}
}

func TestNewBaseContext(t *testing.T) {
	type key struct{}
	base := context.WithValue(context.Background(), key{}, "master")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ctx", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.Context().Value(key{})) })
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = New(Options{Routes: mux, BaseContext: base})
	srv.Start()
	defer srv.Close()
	if a := get(t, "GET", srv.URL+"/ctx"); a.body != "master" {
		t.Errorf("request context value = %q, want the base context's \"master\"", a.body)
	}
}
