package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Whatever a server on the master's port answers, Binaries returns either the
// list or one of the documented errors, and never panics.
func FuzzClientBinaries(f *testing.F) {
	for _, s := range []struct {
		code int
		body string
	}{
		{200, `[]`},
		{200, `null`},
		{200, `[{"version":"1.0.0","size_bytes":-1,"uploaded_at":1e400}]`},
		{200, `[{"version":1}]`},
		{200, `{"error":"x"}`},
		{200, `<html>`},
		{200, "[\"\xff\"]"},
		{404, `{"error":"no such binary"}`},
		{500, `{"error":`},
		{302, ``},
		{204, ``},
	} {
		f.Add(s.code, s.body)
	}
	f.Fuzz(func(t *testing.T, code int, body string) {
		if code < 200 || code > 599 {
			return
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		}))
		defer srv.Close()
		cl, err := NewClient(srv.URL, &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }})
		if err != nil {
			t.Fatal(err)
		}
		list, raw, err := cl.Binaries(context.Background())
		var se *StatusError
		switch {
		case err == nil:
			if code != http.StatusOK || string(raw) != body {
				t.Fatalf("answer %d %q accepted as the list %+v", code, body, list)
			}
		case errors.As(err, &se):
			if code == http.StatusOK || se.StatusCode != code {
				t.Fatalf("answer %d %q: StatusError %+v", code, body, se)
			}
		case errors.Is(err, ErrNotContract):
			if code != http.StatusOK {
				t.Fatalf("answer %d %q: %v, want a StatusError", code, body, err)
			}
		default:
			t.Fatalf("answer %d %q: undocumented error %v", code, body, err)
		}
	})
}
