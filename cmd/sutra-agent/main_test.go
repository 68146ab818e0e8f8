package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/version"
)

// newMaster serves one storage-server 1.2.3 for this machine on the design
// document's routes.
func newMaster(t *testing.T, data []byte) *httptest.Server {
	t.Helper()
	p, a, err := platform.Current()
	if err != nil {
		t.Skip(err)
	}
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	name := fmt.Sprintf("storage-server-1.2.3-%s-%s", p, a)
	info := map[string]any{"version": "1.2.3", "platform": p, "arch": a, "checksum": sum,
		"size_bytes": len(data), "path": name, "uploaded_at": 1}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/binaries/{v}/{p}/{a}", func(w http.ResponseWriter, r *http.Request) {
		if v := r.PathValue("v"); v != "latest" && v != "1.2.3" {
			http.Error(w, `{"error":"binary not found"}`, 404)
			return
		}
		json.NewEncoder(w).Encode(info)
	})
	mux.HandleFunc("POST /api/binaries/{v}/{p}/{a}/verify", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Checksum string }
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(map[string]any{"valid": req.Checksum == sum, "expected_checksum": sum})
	})
	mux.HandleFunc("GET /binaries/"+name, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"`+sum+`"`)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent-config.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out, &out); err != nil || strings.TrimSpace(out.String()) != version.Version {
			t.Errorf("sutra-agent %s = %q, %v; want %q", arg, out.String(), err, version.Version)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"fetch", "--nope"}, {"fetch", "extra"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); !errors.Is(err, errUsage) {
			t.Errorf("sutra-agent %q = %v, want a usage error", args, err)
		}
	}
}

func TestFetchPrintsVerifiedCachedPath(t *testing.T) {
	data := bytes.Repeat([]byte("storage-server"), 5000)
	srv := newMaster(t, data)
	cache := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf(`[agent]
agent_id = "t"
cache_dir = %q
[storage]
master_binary_url = %q
[logging]
level = "warn"
`, cache, srv.URL))
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"fetch", "--config", cfg}, &stdout, &stderr); err != nil {
		t.Fatalf("fetch: %v\n%s", err, stderr.String())
	}
	exe := ""
	if runtime.GOOS == "windows" {
		exe = ".exe"
	}
	want := filepath.Join(cache, "storage-server", "1.2.3", "storage-server"+exe)
	if got := strings.TrimSpace(stdout.String()); got != want {
		t.Errorf("fetch printed %q, want %q", got, want)
	}
	if got, _ := os.ReadFile(want); !bytes.Equal(got, data) {
		t.Error("cached binary differs from the served one")
	}
}

func TestFetchBinaryPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "storage-server")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	cfg := writeConfig(t, fmt.Sprintf("[storage]\nbinary_path = %q\n", bin))
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"fetch", "--config", cfg}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("fetch with a missing binary_path = %v, want a clear error", err)
	}
	os.WriteFile(bin, []byte("x"), 0o755)
	stdout.Reset()
	if err := run(context.Background(), []string{"fetch", "--config", cfg}, &stdout, &stderr); err != nil || strings.TrimSpace(stdout.String()) != bin {
		t.Errorf("fetch with binary_path = %q, %v; want %q", stdout.String(), err, bin)
	}
}

func TestExplicitConfigMustExist(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"run", "--config", filepath.Join(t.TempDir(), "missing.toml")}, &out, &out)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run --config missing = %v, want not-exist", err)
	}
}

func TestBadConfigNamesKey(t *testing.T) {
	cfg := writeConfig(t, "[agent]\nplatform = \"docker\"\n")
	var out bytes.Buffer
	err := run(context.Background(), []string{"run", "--config", cfg}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "agent.platform") || !strings.Contains(err.Error(), "not supported yet") {
		t.Errorf("run with platform docker = %v", err)
	}
}
