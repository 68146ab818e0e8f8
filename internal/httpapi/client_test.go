package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

func TestNewClientAddresses(t *testing.T) {
	for _, c := range []struct {
		base, want string // want "" = refused
	}{
		{"http://127.0.0.1:7001", "http://127.0.0.1:7001"},
		{"http://master:7001/", "http://master:7001"},
		{"https://grid.example/sutra//", "https://grid.example/sutra"},
		{"localhost:7001", ""},
		{"ftp://master:7001", ""},
		{"http://", ""},
		{"http://user:secret@master:7001", ""},
		{"http://master:7001/?x=1", ""},
		{"http://a b:7001", ""},
		{"", ""},
	} {
		cl, err := NewClient(c.base, nil)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("NewClient(%q) = %s, want an error", c.base, cl.Base())
		case c.want != "" && err != nil:
			t.Errorf("NewClient(%q): %v", c.base, err)
		case c.want != "" && cl.Base() != c.want:
			t.Errorf("NewClient(%q).Base() = %q, want %q", c.base, cl.Base(), c.want)
		}
	}
}

func TestClientBinaries(t *testing.T) {
	const list = `[{"version":"1.0.0","platform":"linux","arch":"x86_64","checksum":"ab","size_bytes":3,"path":"storage-server-1.0.0-linux-x86_64","uploaded_at":1,"artifact":"storage-server","future_field":1}]`
	answer := map[string]func(w http.ResponseWriter){
		"/ok": func(w http.ResponseWriter) { w.Write([]byte(list)) },
		"/missing": func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error": "no such thing: add it"}`))
		},
		"/proxy": func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`<html>bad gateway</html>`))
		},
		"/html":   func(w http.ResponseWriter) { w.Write([]byte(`<html>login</html>`)) },
		"/object": func(w http.ResponseWriter) { w.Write([]byte(`{"agents": []}`)) },
		"/huge": func(w http.ResponseWriter) {
			w.Write([]byte("["))
			chunk := []byte(strings.Repeat(" ", 1<<20))
			for range MaxListBytes>>20 + 1 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		},
		"/cut": func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "1000")
			w.Write([]byte(`[{"version"`))
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix, ok := strings.CutSuffix(r.URL.Path, BinariesPath)
		if r.Method != http.MethodGet || !ok || answer[prefix] == nil {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
			return
		}
		answer[prefix](w)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(prefix string) ([]BinaryInfo, []byte, error) {
		cl, err := NewClient(srv.URL+prefix, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		return cl.Binaries(ctx)
	}

	bins, raw, err := get("/ok")
	if err != nil || len(bins) != 1 || bins[0].SizeBytes != 3 || bins[0].Artifact != "storage-server" || string(raw) != list {
		t.Fatalf("Binaries = %+v, %s, %v", bins, raw, err)
	}

	_, _, err = get("/missing")
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != 404 || se.Message != "no such thing: add it" || !strings.Contains(err.Error(), "404 Not Found: no such thing") {
		t.Errorf("404 answer: %v, want a *StatusError with the body's message", err)
	}
	_, _, err = get("/proxy")
	if !errors.As(err, &se) || se.StatusCode != 502 || se.Message != "" {
		t.Errorf("502 HTML answer: %v, want a *StatusError without message", err)
	}
	for _, p := range []string{"/html", "/object", "/huge"} {
		if _, _, err := get(p); !errors.Is(err, ErrNotContract) {
			t.Errorf("%s: %v, want ErrNotContract", p, err)
		}
	}
	if _, _, err := get("/cut"); !errors.Is(err, ErrUnreachable) {
		t.Errorf("cut body: %v, want ErrUnreachable", err)
	}

	dead := testutil.FreeAddr(t)
	cl, err := NewClient("http://"+dead, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.Binaries(ctx); !errors.Is(err, ErrUnreachable) {
		t.Errorf("closed port: %v, want ErrUnreachable", err)
	}
}
