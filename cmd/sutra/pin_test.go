package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/httpjson"
)

// sutra agents pin / unpin and sutra binaries yank / unyank against a
// master over mTLS: a pin refuses set-version for that agent (exit 1,
// "unpin it first"), shows in the table and the detail view; yank lists
// the agents running the version and --rollback moves them to the
// previous unyanked version; bad arguments are usage errors.
func TestCLIPinYank(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 2)
	m.simulateAgent(t, "agent-2", 2)
	m.sutra(t, "nodes", "spawn", "--agent", "agent-1", "--wait").want(t, 0)

	m.sutra(t, "agents", "pin", "agent-2", "--storage-server", "1.0.0").want(t, 0, "agent agent-2 pinned: storage-server 1.0.0")
	r := m.sutra(t, "agents", "set-version", "agent-2", "--storage-server", "2.0.0")
	if r.code == 0 || !strings.Contains(r.stderr, "pinned to storage-server 1.0.0; unpin it first") {
		t.Fatalf("set-version on a pinned agent: exit %d, stderr %q", r.code, r.stderr)
	}
	m.sutra(t, "agents").want(t, 0, "PINNED", "storage-server 1.0.0")
	m.sutra(t, "agents", "set-version", "--storage-server", "1.0.0").want(t, 0, "(skipped agent-2: pinned to storage-server 1.0.0")
	m.sutra(t, "agents", "agent-2").want(t, 0, "Pinned:", "storage-server 1.0.0")
	m.sutra(t, "events", "-n", "50").want(t, 0, "AgentPinned", "by operator@127.0.0.1")
	m.sutra(t, "agents", "unpin", "agent-2").want(t, 0, "agent agent-2 unpinned (pins now: -)")
	m.sutra(t, "agents", "set-version", "agent-2", "--storage-server", "2.0.0").want(t, 0)

	// The binary list the rollback reads: 1.0.0 and an older 0.9.0.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/binaries", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, []map[string]any{
			{"version": "1.0.0", "platform": "linux", "arch": "x86_64", "checksum": "ab", "size_bytes": 1, "path": "storage-server-1.0.0-linux-x86_64", "uploaded_at": 1, "yanked": true},
			{"version": "0.9.0", "platform": "linux", "arch": "x86_64", "checksum": "cd", "size_bytes": 1, "path": "storage-server-0.9.0-linux-x86_64", "uploaded_at": 1},
		})
	})
	hs := httptest.NewServer(mux)
	defer hs.Close()
	env := map[string]string{"SUTRA_MASTER": m.grpcAddr, "SUTRA_HTTP": hs.URL, "SUTRA_DATA_DIR": m.dataDir}
	sutraEnv(t, env, "binaries", "yank", "1.0.0", "--rollback").want(t, 0,
		"storage-server 1.0.0 yanked by operator@127.0.0.1", "agents running it (1): agent-1", "agent agent-1: storage-server 1.0.0 -> 0.9.0")
	m.sutra(t, "agents", "agent-1").want(t, 0, "0.9.0")
	sutraEnv(t, env, "binaries").want(t, 0, "YANKED")
	m.sutra(t, "binaries", "unyank", "1.0.0").want(t, 0, "storage-server 1.0.0 unyanked")
	m.sutra(t, "binaries", "unyank", "1.0.0").want(t, 0, "was not yanked")

	for _, args := range [][]string{
		{"agents", "pin", "agent-1"},
		{"agents", "pin", "agent-1", "--storage-server", "latest"},
		{"agents", "pin", "a", "b", "--agent", "1.0.0"},
		{"agents", "unpin"},
		{"binaries", "yank"},
		{"binaries", "yank", "not-a-version"},
		{"binaries", "yank", "1.0.0", "--artifact", "x"},
		{"binaries", "unyank", "1.0.0", "2.0.0"},
	} {
		if r := m.sutra(t, args...); r.code != exitUsage {
			t.Errorf("sutra %q: exit %d, want %d (usage); stderr %q", args, r.code, exitUsage, r.stderr)
		}
	}
}
