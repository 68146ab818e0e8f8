package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/release"
)

func (m *binMaster) sign(t *testing.T, priv minisign.PrivateKey, v string) {
	t.Helper()
	m.mu.Lock()
	data := m.bins[v]
	m.mu.Unlock()
	sig, _, err := release.Sign(priv, bytes.NewReader(data), release.Identity{Artifact: "storage-server", Version: v, Platform: m.plat, Arch: m.arch})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.sigs[m.name(v)+release.SignatureSuffix] = sig
	m.mu.Unlock()
}

// With release keys configured: a signed storage-server runs; an unsigned
// new version is refused, the running node keeps its version and process,
// and every heartbeat says why.
func TestUnsignedNewVersionRefusedNodeKeepsRunning(t *testing.T) {
	exe := selfExe(t)
	m := newBinMaster(t)
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m.publish("1.0.0", exe, false)
	m.sign(t, priv, "1.0.0")
	m.publish("1.1.0", append(append([]byte(nil), exe...), "1.1.0"...), false) // unsigned

	cfg := testConfig(t, "", m.srv.URL, 23000+os.Getpid()%2000*10, 4)
	text, _ := pub.MarshalText()
	cfg.Security.ReleasePublicKeys = []string{string(text)}
	a, err := New(Options{Config: cfg, Logger: testLogger(t), StopNodesOnExit: true, StopGrace: 5 * time.Second,
		ReconcileInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})

	a.onDesired(desired(1, "1.0.0", "node-a"))
	waitFor(t, "node-a running on the signed 1.0.0", func() bool { return runningOn(a, "node-a", "1.0.0") })
	st, _ := a.sup.NodeStatus("node-a")
	pid := st.PID

	a.onDesired(desired(2, "1.1.0", "node-a"))
	var msg string
	waitFor(t, "the refusal reported on node-a", func() bool {
		for _, n := range a.report().Nodes {
			if n.NodeID == "node-a" {
				msg = n.Message
			}
		}
		return strings.Contains(msg, "refused (signature unsigned)")
	})
	if !strings.Contains(msg, "keep running 1.0.0") {
		t.Errorf("message %q does not say the node keeps its version", msg)
	}
	time.Sleep(500 * time.Millisecond)
	st, _ = a.sup.NodeStatus("node-a")
	if !runningOn(a, "node-a", "1.0.0") || st.PID != pid {
		t.Fatalf("node-a = %+v, want still running 1.0.0 as pid %d", st, pid)
	}

	// The release is signed after all: the upgrade goes through and the
	// refusal is no longer reported.
	m.sign(t, priv, "1.1.0")
	a.onDesired(desired(3, "1.1.0", "node-a"))
	waitFor(t, "node-a upgraded to the signed 1.1.0", func() bool { return runningOn(a, "node-a", "1.1.0") })
	if hi, err := a.ratchet.Highest("storage-server"); err != nil || hi != "1.1.0" {
		t.Errorf("rollback ratchet = %q, %v after the node upgrade to 1.1.0, want 1.1.0", hi, err)
	}
	for _, n := range a.report().Nodes {
		if strings.Contains(n.Message, "refused") {
			t.Errorf("report still says %q after the signed download", n.Message)
		}
	}
}

// A cached storage-server replaced on disk (its meta.json rewritten to
// match) is caught by the signature check before the supervisor restarts
// the crashed node: removed, fetched again, verified, and the node runs the
// genuine binary again.
func TestTamperedCachedBinaryRefusedBeforeExec(t *testing.T) {
	exe := selfExe(t)
	m := newBinMaster(t)
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m.publish("1.0.0", exe, false)
	m.sign(t, priv, "1.0.0")
	cfg := testConfig(t, "", m.srv.URL, 25000+os.Getpid()%2000*10, 4)
	cfg.Security.ReleasePublicKeys = []string{pub.String()}
	a, err := New(Options{Config: cfg, Logger: testLogger(t), StopNodesOnExit: true, StopGrace: 5 * time.Second,
		ReconcileInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})
	a.onDesired(desired(1, "1.0.0", "node-a"))
	waitFor(t, "node-a running on 1.0.0", func() bool { return runningOn(a, "node-a", "1.0.0") })
	st, _ := a.sup.NodeStatus("node-a")
	rec, _ := a.rec.get("node-a")
	path := rec.BinaryPath

	// Replace the cached binary by a script and make meta.json agree.
	evil := []byte("#!/bin/sh\necho owned > \"$STORAGE_PATH/owned\"\nsleep 60\n")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, evil, 0o755); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(filepath.Dir(path), "meta.json")
	raw, _ := os.ReadFile(metaPath)
	var meta map[string]any
	_ = json.Unmarshal(raw, &meta)
	meta["checksum"], meta["size_bytes"] = sum(evil), len(evil)
	raw, _ = json.Marshal(meta)
	if err := os.WriteFile(metaPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	// The node crashes; the supervisor restarts it from the cache.
	if p, err := os.FindProcess(st.PID); err == nil {
		_ = p.Kill()
	}
	waitFor(t, "node-a running again on the genuine 1.0.0", func() bool {
		st2, _ := a.sup.NodeStatus("node-a")
		got, _ := os.ReadFile(path)
		return runningOn(a, "node-a", "1.0.0") && st2.PID != st.PID && bytes.Equal(got, exe)
	})
	if _, err := os.Stat(filepath.Join(rec.DataDir, "owned")); err == nil {
		t.Fatal("the tampered binary was executed")
	}
}
