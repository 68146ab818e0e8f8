package storagenode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newTestServer(t testing.TB) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(Options{DataDir: t.TempDir(), NodeID: "n1", Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ts.Close()
		_ = s.Close()
	})
	return s, ts
}

func do(t testing.TB, method, url string, body io.Reader) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
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
	return resp.StatusCode, b, resp.Header
}

// jsonError asserts body is {"error": "..."} and returns the message.
func jsonError(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return e.Error
}

func TestKVRoundTrip(t *testing.T) {
	_, ts := newTestServer(t)
	url := ts.URL + "/kv/hello"

	code, body, _ := do(t, http.MethodGet, url, nil)
	if code != http.StatusNotFound {
		t.Fatalf("GET missing = %d, want 404", code)
	}
	jsonError(t, body)

	code, body, _ = do(t, http.MethodPut, url, strings.NewReader("world"))
	if code != http.StatusOK {
		t.Fatalf("PUT = %d %s, want 200", code, body)
	}
	var pr putResult
	if err := json.Unmarshal(body, &pr); err != nil {
		t.Fatal(err)
	}
	if pr != (putResult{Key: "hello", Bytes: 5, Created: true}) {
		t.Errorf("PUT result = %+v, want created hello 5 bytes", pr)
	}

	code, body, hdr := do(t, http.MethodGet, url, nil)
	if code != http.StatusOK || string(body) != "world" {
		t.Fatalf("GET = %d %q, want 200 world", code, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type = %q, want application/octet-stream", ct)
	}

	code, body, _ = do(t, http.MethodPut, url, strings.NewReader("again"))
	if code != http.StatusOK {
		t.Fatalf("PUT overwrite = %d", code)
	}
	_ = json.Unmarshal(body, &pr)
	if pr.Created {
		t.Errorf("overwrite reported created")
	}

	if code, _, _ = do(t, http.MethodDelete, url, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE = %d, want 204", code)
	}
	if code, body, _ = do(t, http.MethodDelete, url, nil); code != http.StatusNotFound {
		t.Fatalf("DELETE missing = %d, want 404", code)
	}
	jsonError(t, body)
	if code, _, _ = do(t, http.MethodGet, url, nil); code != http.StatusNotFound {
		t.Fatalf("GET after DELETE = %d, want 404", code)
	}

	// Empty values and keys with slashes are fine.
	if code, _, _ = do(t, http.MethodPut, ts.URL+"/kv/a/b/c", strings.NewReader("")); code != http.StatusOK {
		t.Fatalf("PUT a/b/c = %d", code)
	}
	if code, body, _ = do(t, http.MethodGet, ts.URL+"/kv/a/b/c", nil); code != http.StatusOK || len(body) != 0 {
		t.Fatalf("GET a/b/c = %d %q", code, body)
	}
}

func TestValueLimit(t *testing.T) {
	_, ts := newTestServer(t)
	exact := bytes.Repeat([]byte{'x'}, MaxValueBytes)
	if code, body, _ := do(t, http.MethodPut, ts.URL+"/kv/big", bytes.NewReader(exact)); code != http.StatusOK {
		t.Fatalf("PUT 1 MiB = %d %s, want 200", code, body)
	}
	over := append(exact, 'y')
	code, body, _ := do(t, http.MethodPut, ts.URL+"/kv/big2", bytes.NewReader(over))
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("PUT 1 MiB + 1 = %d, want 413", code)
	}
	jsonError(t, body)

	// Without Content-Length (chunked), the reader cap still applies.
	code, body, _ = do(t, http.MethodPut, ts.URL+"/kv/big3", io.MultiReader(bytes.NewReader(over)))
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked PUT 1 MiB + 1 = %d, want 413", code)
	}
	jsonError(t, body)
	if code, _, _ := do(t, http.MethodGet, ts.URL+"/kv/big3", nil); code != http.StatusNotFound {
		t.Errorf("rejected value was stored: GET = %d", code)
	}
}

func TestBadRequests(t *testing.T) {
	_, ts := newTestServer(t)
	tests := []struct {
		name, method, path string
		want               int
	}{
		{"empty key", http.MethodGet, "/kv/", http.StatusBadRequest},
		{"space in key", http.MethodPut, "/kv/a%20b", http.StatusBadRequest},
		{"control char", http.MethodGet, "/kv/a%01b", http.StatusBadRequest},
		{"invalid utf8", http.MethodGet, "/kv/%ff", http.StatusBadRequest},
		{"key too long", http.MethodGet, "/kv/" + strings.Repeat("k", MaxKeyBytes+1), http.StatusBadRequest},
		{"bad method", http.MethodPost, "/kv/x", http.StatusMethodNotAllowed},
		{"unknown path", http.MethodGet, "/nope", http.StatusNotFound},
		{"healthz post", http.MethodPost, "/healthz", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := do(t, tt.method, ts.URL+tt.path, strings.NewReader("v"))
			if code != tt.want {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, code, body, tt.want)
			}
			jsonError(t, body)
		})
	}
}

func TestHealthAndVersion(t *testing.T) {
	s, err := New(Options{DataDir: t.TempDir(), NodeID: "n7", Version: "1.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer ts.Close()

	if code, _, _ := do(t, http.MethodGet, ts.URL+"/healthz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz before Open = %d, want 503", code)
	}
	if code, body, _ := do(t, http.MethodGet, ts.URL+"/kv/a", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("GET before Open = %d, want 503", code)
	} else {
		jsonError(t, body)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	code, body, _ := do(t, http.MethodGet, ts.URL+"/healthz", nil)
	var h health
	_ = json.Unmarshal(body, &h)
	if code != http.StatusOK || h != (health{Status: "ok", NodeID: "n7", Version: "1.1.0"}) {
		t.Fatalf("healthz = %d %s, want 200 ok n7 1.1.0", code, body)
	}
	code, body, _ = do(t, http.MethodGet, ts.URL+"/version", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"1.1.0"`) {
		t.Fatalf("version = %d %s", code, body)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := do(t, http.MethodGet, ts.URL+"/healthz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz after Close = %d, want 503", code)
	}
}

func TestFailHealthKnob(t *testing.T) {
	s, err := New(Options{DataDir: t.TempDir(), FailHealth: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s)
	defer ts.Close()
	if code, _, _ := do(t, http.MethodGet, ts.URL+"/healthz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz with FailHealth = %d, want 503", code)
	}
	if code, _, _ := do(t, http.MethodPut, ts.URL+"/kv/a", strings.NewReader("b")); code != http.StatusOK {
		t.Fatalf("PUT with FailHealth = %d, want 200 (only health fails)", code)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := New(Options{DataDir: dir})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	do(t, http.MethodPut, ts.URL+"/kv/k", strings.NewReader("v"))
	ts.Close()
	_ = s.Close()

	s2, _ := New(Options{DataDir: dir})
	if err := s2.Open(); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ts2 := httptest.NewServer(s2)
	defer ts2.Close()
	if code, body, _ := do(t, http.MethodGet, ts2.URL+"/kv/k", nil); code != 200 || string(body) != "v" {
		t.Fatalf("after reopen GET = %d %q, want 200 v", code, body)
	}
}

func TestOpenLockedTimesOut(t *testing.T) {
	dir := t.TempDir()
	s1, _ := New(Options{DataDir: dir})
	if err := s1.Open(); err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, _ := New(Options{DataDir: dir, OpenTimeout: 100 * time.Millisecond})
	err := s2.Open()
	if err == nil {
		_ = s2.Close()
		t.Skip("this platform's bbolt does not lock within one process")
	}
	if !strings.Contains(err.Error(), "another process holds it") {
		t.Errorf("Open of a locked db = %v, want a hint about another process", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{OpenTimeout: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "data dir") || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("Validate = %v, want both problems", err)
	}
}

func TestRunGracefulShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, "127.0.0.1:0", Options{DataDir: t.TempDir(), NodeID: "r"}, func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run not ready")
	}
	// An in-flight PUT whose body arrives after the shutdown started still succeeds.
	pr, pw := io.Pipe()
	resc := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/kv/slow", pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			resc <- -1
			return
		}
		resp.Body.Close()
		resc <- resp.StatusCode
	}()
	_, _ = pw.Write([]byte("part1-"))
	time.Sleep(100 * time.Millisecond) // let the request reach the handler
	cancel()
	time.Sleep(100 * time.Millisecond)
	_, _ = pw.Write([]byte("part2"))
	_ = pw.Close()
	if code := <-resc; code != http.StatusOK {
		t.Errorf("in-flight PUT during shutdown = %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunListenError(t *testing.T) {
	err := Run(context.Background(), "127.0.0.1:-5", Options{DataDir: t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run on a bad address = %v, want a listen error", err)
	}
}

func TestParseConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{name: "env only", env: map[string]string{EnvPort: "9001", EnvDataDir: "/d", EnvNodeID: "e", EnvBind: "127.0.0.1"},
			want: Config{Bind: "127.0.0.1", Port: 9001, DataDir: "/d", NodeID: "e"}},
		{name: "flags win", args: []string{"--port", "9002", "--data-dir", "/f", "--node-id", "f", "--bind", "::1"},
			env:  map[string]string{EnvPort: "9001", EnvDataDir: "/d", EnvNodeID: "e", EnvBind: "127.0.0.1"},
			want: Config{Bind: "::1", Port: 9002, DataDir: "/f", NodeID: "f"}},
		{name: "bad env port is reported", args: []string{"--port=9003", "--node-id=x"}, env: map[string]string{EnvPort: "nope"},
			wantErr: EnvPort},
		{name: "bad flag port", args: []string{"--port", "70000", "--node-id=x"}, wantErr: "--port"},
		{name: "knobs", args: []string{"--node-id=x"}, env: map[string]string{EnvFailHealth: "1", EnvCrashAfter: "2s"},
			want: Config{Bind: DefaultBind, Port: DefaultPort, DataDir: DefaultDataDir, NodeID: "x", FailHealth: true, CrashAfter: 2 * time.Second}},
		{name: "bad crash knob", args: []string{"--node-id=x"}, env: map[string]string{EnvCrashAfter: "soon"}, wantErr: EnvCrashAfter},
		{name: "positional", args: []string{"--node-id=x", "extra"}, wantErr: "unexpected arguments"},
		{name: "empty data dir", args: []string{"--node-id=x", "--data-dir="}, wantErr: "data dir is empty"},
		{name: "version", args: []string{"--version", "--node-id=x"},
			want: Config{Bind: DefaultBind, Port: DefaultPort, DataDir: DefaultDataDir, NodeID: "x", ShowVersion: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseConfig(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig(%q) = %v", tt.args, err)
			}
			if got != tt.want {
				t.Errorf("ParseConfig(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
	_, err := ParseConfig([]string{"-h"}, env(nil), io.Discard)
	if !errors.Is(err, ErrHelp) {
		t.Errorf("ParseConfig(-h) = %v, want ErrHelp", err)
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, seed := range []string{"", "a", "a/b", "a b", "\x00", "\xff", strings.Repeat("k", MaxKeyBytes+1), "ключ"} {
		f.Add(seed)
	}
	s, err := New(Options{DataDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Open(); err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			return
		}
		// Valid keys round-trip through the handler.
		req := httptest.NewRequest(http.MethodPut, "/kv/x", strings.NewReader("v"))
		req.SetPathValue("key", key)
		rec := httptest.NewRecorder()
		s.handleKV(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("PUT valid key %q = %d %s", key, rec.Code, rec.Body)
		}
	})
}

func BenchmarkPut(b *testing.B) {
	_, ts := newTestServer(b)
	val := bytes.Repeat([]byte("v"), 1024)
	client := ts.Client()
	b.SetBytes(int64(len(val)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s/kv/key-%d", ts.URL, i%1000), bytes.NewReader(val))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("PUT = %d", resp.StatusCode)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	_, ts := newTestServer(b)
	client := ts.Client()
	do(b, http.MethodPut, ts.URL+"/kv/k", bytes.NewReader(bytes.Repeat([]byte("v"), 1024)))
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Get(ts.URL + "/kv/k")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
