//go:build unix

package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/supervisor"
)

// Any process of the agent's user can carry any environment: a marked
// process is taken for a node only with a valid id, port and data dir, and
// when it runs the agent's own storage-server.
func TestMarkedNodeRejectsHostileMarkers(t *testing.T) {
	cfg := testConfig(t, "", "", 20000, 4)
	a := &Agent{cfg: cfg}
	cached := filepath.Join(cfg.Agent.CacheDir, "storage-server", "1.0.0", "storage-server")
	sum := strings.Repeat("ab", 32)
	good := func() supervisor.Marked {
		return supervisor.Marked{
			Identity: supervisor.Identity{PID: 42, StartTime: 7, BootID: "b", Exe: cached},
			Env: map[string]string{
				envNodeID: "n1", "STORAGE_PORT": "50051", "STORAGE_PATH": "/srv/nodes/n1",
				envVersion: "1.0.0", envChecksum: sum,
			},
		}
	}
	n, err := a.markedNode(good())
	if err != nil {
		t.Fatalf("markedNode(good) = %v", err)
	}
	want := state.Node{NodeID: "n1", Port: 50051, DataDir: "/srv/nodes/n1", PID: 42, StartTime: 7, BootID: "b",
		BinaryPath: cached, Version: "1.0.0", Checksum: sum}
	if n != want {
		t.Errorf("markedNode(good) = %+v, want %+v", n, want)
	}
	deleted := good()
	deleted.Exe += " (deleted)"
	if n, err := a.markedNode(deleted); err != nil || n.BinaryPath != cached {
		t.Errorf("markedNode(binary replaced since start) = %+v, %v; want path %s", n, err, cached)
	}
	badSum := good()
	badSum.Env[envChecksum] = "../../x"
	if n, err := a.markedNode(badSum); err != nil || n.Checksum != "" || n.Version != "" {
		t.Errorf("markedNode(bad checksum) = %+v, %v; want the node without version and checksum", n, err)
	}

	for name, mutate := range map[string]func(*supervisor.Marked){
		"no node id":         func(m *supervisor.Marked) { delete(m.Env, envNodeID) },
		"path in node id":    func(m *supervisor.Marked) { m.Env[envNodeID] = "../etc" },
		"long node id":       func(m *supervisor.Marked) { m.Env[envNodeID] = strings.Repeat("n", 300) },
		"port zero":          func(m *supervisor.Marked) { m.Env["STORAGE_PORT"] = "0" },
		"port too big":       func(m *supervisor.Marked) { m.Env["STORAGE_PORT"] = "70000" },
		"port not a number":  func(m *supervisor.Marked) { m.Env["STORAGE_PORT"] = "80; rm" },
		"relative data dir":  func(m *supervisor.Marked) { m.Env["STORAGE_PATH"] = "nodes/n1" },
		"foreign executable": func(m *supervisor.Marked) { m.Exe = "/usr/bin/python3" },
		"cache dir itself":   func(m *supervisor.Marked) { m.Exe = cfg.Agent.CacheDir },
		"beside the cache":   func(m *supervisor.Marked) { m.Exe = cfg.Agent.CacheDir + "-evil/storage-server" },
		"relative exe":       func(m *supervisor.Marked) { m.Exe = "storage-server" },
	} {
		m := good()
		mutate(&m)
		if n, err := a.markedNode(m); err == nil {
			t.Errorf("%s: markedNode = %+v, want an error", name, n)
		}
	}

	// With storage.binary_path, that file (symlinks resolved) is the one.
	bin := filepath.Join(t.TempDir(), "storage-server")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	a.cfg = testConfig(t, link, "", 20000, 4)
	m := good()
	m.Exe = bin
	if _, err := a.markedNode(m); err != nil {
		t.Errorf("markedNode(binary_path through a symlink) = %v", err)
	}
	m.Exe = cached
	if _, err := a.markedNode(m); err == nil {
		t.Error("markedNode(cache binary while binary_path is set) succeeded")
	}
}

// A corrupt record is kept aside at start; a record that is there but
// unreadable stops the agent instead of being replaced.
func TestLoadRecordKeepsACorruptRecordAside(t *testing.T) {
	cfg := testConfig(t, "", "", 20000, 4)
	a := &Agent{cfg: cfg, log: testLogger(t)}
	var err error
	if a.store, err = state.Open(cfg.Agent.AgentDataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.store.Path(), []byte(`{"version":1,"nodes":{"n1":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.loadRecord(); err != nil {
		t.Fatalf("loadRecord(corrupt) = %v", err)
	}
	if a.recovery.movedTo == "" || a.rec.len() != 0 {
		t.Fatalf("after loadRecord(corrupt): moved to %q, %d nodes", a.recovery.movedTo, a.rec.len())
	}
	if b, _ := os.ReadFile(a.recovery.movedTo); string(b) != `{"version":1,"nodes":{"n1":` {
		t.Errorf("kept copy holds %q", b)
	}
	if _, err := os.Stat(a.store.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nodes.json after moving aside: %v, want gone until the next save", err)
	}
	if os.Getuid() == 0 {
		return // root reads any file
	}
	if err := os.WriteFile(a.store.Path(), []byte(`{"version":1,"nodes":{}}`), 0o000); err != nil {
		t.Fatal(err)
	}
	if err := a.loadRecord(); err == nil {
		t.Error("loadRecord(unreadable) succeeded")
	}
}
