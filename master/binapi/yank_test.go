package binapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/master/httpserver"
	"github.com/sutragrid/sutra/master/releases"
	"github.com/sutragrid/sutra/master/store"
)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

// TestLatestSkipsYanked: /api/binaries/latest/… (what agents asking for
// "latest" resolve through) skips a yanked version, /api/binaries marks it
// "yanked": true, and unyank restores it.
func TestLatestSkipsYanked(t *testing.T) {
	ctx := context.Background()
	c := newCatalog(t, map[string][]byte{
		"storage-server-1.0.0-linux-x86_64": []byte("one"),
		"storage-server-1.1.0-linux-x86_64": []byte("one-one"),
		"sutra-agent-2.0.0-linux-x86_64":    []byte("agent"),
	})
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rel, err := releases.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(Options{Catalog: c})
	if err != nil {
		t.Fatal(err)
	}
	api.SetYanked(rel)
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(httpserver.Handler(mux, nil))
	defer srv.Close()

	latest := func(path string) (string, int) {
		var info httpapi.BinaryInfo
		code := getJSON(t, srv.URL+path, &info)
		return info.Version, code
	}
	if v, _ := latest("/api/binaries/latest/linux/x86_64"); v != "1.1.0" {
		t.Fatalf("latest = %s, want 1.1.0", v)
	}
	if _, err := rel.Yank(ctx, "storage-server", "1.1.0", "op"); err != nil {
		t.Fatal(err)
	}
	if v, _ := latest("/api/binaries/latest/linux/x86_64"); v != "1.0.0" {
		t.Fatalf("latest with 1.1.0 yanked = %s, want 1.0.0", v)
	}
	// Still served by exact version, marked yanked.
	var one httpapi.BinaryInfo
	if code := getJSON(t, srv.URL+"/api/binaries/1.1.0/linux/x86_64", &one); code != 200 || !one.Yanked {
		t.Fatalf("GET 1.1.0 = %d %+v, want 200 yanked", code, one)
	}
	var list []map[string]any
	getJSON(t, srv.URL+"/api/binaries", &list)
	for _, b := range list {
		y, has := b["yanked"]
		if b["version"] == "1.1.0" && y != true {
			t.Errorf("/api/binaries 1.1.0: yanked = %v, want true", y)
		}
		if b["version"] == "1.0.0" && has {
			t.Errorf("/api/binaries 1.0.0 has a yanked field: %v", b)
		}
	}
	// Every version yanked: no latest at all.
	if _, err := rel.Yank(ctx, "sutra-agent", "2.0.0", "op"); err != nil {
		t.Fatal(err)
	}
	if _, code := latest("/api/artifacts/sutra-agent/latest/linux/x86_64"); code != http.StatusNotFound {
		t.Fatalf("sutra-agent latest with its only version yanked = %d, want 404", code)
	}
	if _, err := rel.Unyank(ctx, "storage-server", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if v, _ := latest("/api/binaries/latest/linux/x86_64"); v != "1.1.0" {
		t.Fatalf("latest after unyank = %s, want 1.1.0", v)
	}
}
