package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/internal/testutil"
)

// cachedThenMasterDown fetches storage-server 1.2.3 into a fresh cache, then
// stops the master; it returns the config file and the cached path.
func cachedThenMasterDown(t *testing.T, data []byte) (cfg, cached, dataDir string) {
	t.Helper()
	srv := newMaster(t, data)
	cacheDir := t.TempDir()
	dataDir = t.TempDir()
	cfg = writeConfig(t, fmt.Sprintf(`[agent]
agent_id = "t"
cache_dir = %q
agent_data_dir = %q
[storage]
master_binary_url = %q
[logging]
level = "warn"
`, cacheDir, dataDir, srv.URL))
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"fetch", "--config", cfg}, &stdout, &stderr); err != nil {
		t.Fatalf("fetch: %v\n%s", err, stderr.String())
	}
	srv.Close()
	return cfg, strings.TrimSpace(stdout.String()), dataDir
}

// Issue 10 item 12: with the master down, `fetch --offline` prints the
// verified cached binary at once.
func TestFetchOfflineUsesVerifiedCache(t *testing.T) {
	cfg, cached, _ := cachedThenMasterDown(t, bytes.Repeat([]byte("storage-server"), 4000))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"fetch", "--offline", "--config", cfg}, &stdout, &stderr); err != nil {
		t.Fatalf("fetch --offline with the master down: %v\n%s", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != cached {
		t.Errorf("fetch --offline printed %q, want %q", got, cached)
	}
	stdout.Reset()
	if err := run(ctx, []string{"fetch", "--offline", "--version", "1.2.3", "--config", cfg}, &stdout, &stderr); err != nil || strings.TrimSpace(stdout.String()) != cached {
		t.Errorf("fetch --offline --version 1.2.3 = %q, %v; want %q", stdout.String(), err, cached)
	}
	if err := run(ctx, []string{"fetch", "--offline", "--version", "9.9.9", "--config", cfg}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "not in cache") {
		t.Errorf("fetch --offline --version 9.9.9 = %v, want a not-in-cache error", err)
	}
}

// Issue 10 item 12 (with item 7's record): --offline never picks a binary
// this agent recorded as failed.
func TestFetchOfflineSkipsRecordedFailure(t *testing.T) {
	data := bytes.Repeat([]byte("bad release"), 4000)
	cfg, _, dataDir := cachedThenMasterDown(t, data)
	st, err := state.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if err := st.SaveFailures(state.Failures{hex.EncodeToString(sum[:]): {
		Checksum: hex.EncodeToString(sum[:]), Version: "1.2.3", Desired: "latest", Generation: 4, Reason: "crashed", At: time.Now().Unix()}}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"fetch", "--offline", "--config", cfg}, &stdout, &stderr)
	if err == nil || stdout.Len() != 0 {
		t.Errorf("fetch --offline with the only cached version recorded as failed = %q, %v; want an error", stdout.String(), err)
	}
	err = run(context.Background(), []string{"fetch", "--offline", "--version", "1.2.3", "--config", cfg}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "failed on this agent") {
		t.Errorf("fetch --offline --version 1.2.3 recorded as failed = %v, want an error saying so", err)
	}
}

// Issue 10 item 12: `fetch` with the master down says, after the first
// failed request and long before it gives up (~85 s), that the master is
// unreachable, which verified version is cached, and how to use it.
func TestFetchMasterDownNamesCachedVersion(t *testing.T) {
	cfg, cached, _ := cachedThenMasterDown(t, bytes.Repeat([]byte("storage-server"), 4000))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout bytes.Buffer
	var stderr testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"fetch", "--config", cfg}, &stdout, &stderr) }()
	deadline := time.After(30 * time.Second)
	for {
		out := stderr.String()
		if strings.Contains(out, "unreachable") && strings.Contains(out, "storage-server 1.2.3 is cached and verified at "+cached) &&
			strings.Contains(out, "sutra-agent fetch --offline") {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("fetch ended (%v) without naming the cached version:\n%s", err, out)
		case <-deadline:
			t.Fatalf("no unreachable-master line naming the cached version within 30 s:\n%s", out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("fetch with the master down succeeded")
	}
}

func TestFetchHelpMentionsOffline(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"fetch", "--help"}, &stdout, &stderr); err != nil {
		t.Errorf("fetch --help = %v", err)
	}
	if !strings.Contains(stderr.String(), "-offline") || !strings.Contains(stderr.String(), "verified cached") {
		t.Errorf("fetch --help = %q, want it to describe --offline", stderr.String())
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"help"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "--offline") {
		t.Errorf("sutra-agent help = %q, %v; want --offline in the usage", stdout.String(), err)
	}
}

// The cache dir must be private: a world-writable one is refused with the fix.
func TestFetchRefusesWorldWritableCache(t *testing.T) {
	if filepath.Separator == '\\' {
		t.Skip("Unix modes")
	}
	srv := newMaster(t, []byte("bin"))
	cacheDir := filepath.Join(t.TempDir(), "c")
	if err := mkdirMode(cacheDir, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("[agent]\ncache_dir = %q\n[storage]\nmaster_binary_url = %q\n[logging]\nlevel = \"error\"\n", cacheDir, srv.URL))
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"fetch", "--config", cfg}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "writable by other users") || !strings.Contains(err.Error(), "chmod go-w "+cacheDir) {
		t.Errorf("fetch into a world-writable cache dir = %v, want a refusal naming the fix", err)
	}
}

func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}
