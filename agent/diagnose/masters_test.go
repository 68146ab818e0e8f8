package diagnose

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/config"
)

// Issue 16: with several masters listed, diagnose checks each one and
// prints each one's reachability; one HTTP master down while another
// answers is a warning, every gRPC master down a problem.
func TestDiagnoseChecksEveryMaster(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("[]")) }))
	defer up.Close()
	dir := t.TempDir()
	body := "[agent]\nagent_id = \"a1\"\nmaster_host = \"127.0.0.1:1, 127.0.0.1:2\"\ncache_dir = \"" + filepath.Join(dir, "cache") +
		"\"\nagent_data_dir = \"" + filepath.Join(dir, "agent") + "\"\n[storage]\nmaster_binary_url = \"" + up.URL + ",http://127.0.0.1:1\"\ndata_path = \"" +
		filepath.Join(dir, "nodes") + "\"\n"
	cfg, err := config.Parse(filepath.Join(dir, "agent-config.toml"), []byte(body), config.Env{
		Getenv: func(string) string { return "" }, Hostname: func() (string, error) { return "h", nil },
		UserCacheDir: func() (string, error) { return dir, nil }, UserDataDir: func() (string, error) { return dir, nil },
		HomeDir: func() (string, error) { return dir, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Gather(context.Background(), Options{Config: cfg, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range rep.Master {
		got = append(got, c.Name+" "+c.Addr+" "+map[bool]string{true: "ok", false: "down"}[c.OK])
	}
	want := []string{"grpc 127.0.0.1:1 down", "grpc 127.0.0.1:2 down", "http " + up.URL + " ok", "http http://127.0.0.1:1 down"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("master checks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	problems, warnings := strings.Join(rep.Problems, "\n"), strings.Join(rep.Warnings, "\n")
	if !strings.Contains(problems, "master grpc port 127.0.0.1:2") || !strings.Contains(problems, "master grpc port 127.0.0.1:1") {
		t.Errorf("problems = %q, want both gRPC masters named", rep.Problems)
	}
	if strings.Contains(problems, "http://127.0.0.1:1") || !strings.Contains(warnings, "master http port http://127.0.0.1:1") {
		t.Errorf("the HTTP master down beside a working one: problems %q, warnings %q; want a warning", rep.Problems, rep.Warnings)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"127.0.0.1:1", "127.0.0.1:2", up.URL} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text report does not name %s", w)
		}
	}
}
