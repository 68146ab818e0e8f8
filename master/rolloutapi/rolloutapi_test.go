package rolloutapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/rollout"
	"github.com/sutragrid/sutra/master/store"
)

type oneAgent struct{}

func (oneAgent) Agents() []fleet.Agent {
	return []fleet.Agent{{ID: "a1", Platform: "linux", Arch: "x86_64", Health: fleet.Healthy, Desired: fleet.Desired{StorageServerVersion: "1.0.0"}}}
}
func (oneAgent) SetDesiredVersion(context.Context, fleet.VersionChange) ([]fleet.Agent, error) {
	return nil, nil
}
func (oneAgent) Record(context.Context, string, string, string) error { return nil }

func TestRoutes(t *testing.T) {
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := rollout.New(t.Context(), rollout.Options{Store: st, Fleet: oneAgent{}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Start(t.Context(), rollout.Spec{Artifact: "storage-server", Version: "1.1.0", Soak: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	Register(mux, c)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string, want int) []byte {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("%s: %d %s, want %d", path, resp.StatusCode, b.String(), want)
		}
		return []byte(b.String())
	}
	var list []httpapi.Rollout
	if err := json.Unmarshal(get("/api/rollouts", 200), &list); err != nil || len(list) != 1 || list[0].ID != r.ID || list[0].Agents[0].State != "pending" {
		t.Fatalf("list %+v %v", list, err)
	}
	var one httpapi.Rollout
	if err := json.Unmarshal(get("/api/rollouts/"+r.ID, 200), &one); err != nil || one.State != "pending" || one.SoakSeconds != 1 {
		t.Fatalf("one %+v %v", one, err)
	}
	get("/api/rollouts/ro-nope", 404)
	get("/api/rollouts/"+strings.Repeat("x", 100), 400)
	resp, err := http.Post(srv.URL+"/api/rollouts", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}
