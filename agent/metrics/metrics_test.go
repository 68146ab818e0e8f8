package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeCert writes a real self-signed certificate expiring at notAfter.
func writeCert(t *testing.T, path string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The agent's endpoint on a real loopback port: node states, restarts,
// cache bytes from real files, the certificate's expiry from a real
// certificate, the self-update phase, heartbeats and fetch failures; the
// heartbeat summary carries the same figures; other paths are 404.
func TestAgentMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	if err := os.MkdirAll(filepath.Join(cache, "storage-server", "1.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "storage-server", "1.0.0", "bin"), make([]byte, 1234), 0o755); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "agent.crt")
	expiry := time.Now().Add(72 * time.Hour).Truncate(time.Second)
	writeCert(t, cert, expiry)

	var phase atomic.Value
	phase.Store("")
	m, err := New(Options{Version: "1.2.3", CacheDir: cache, CertFile: cert, State: func() Snapshot {
		return Snapshot{UpgradePhase: phase.Load().(string), Nodes: []Node{
			{State: "running", Restarts: 2}, {State: "backoff", Restarts: 7}, {State: "running"},
		}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.Heartbeat(nil)
	m.Heartbeat(nil)
	m.Heartbeat(io.EOF)
	m.FetchFailed()
	m.Fetched(2*time.Second, 5000, true, nil)
	m.Fetched(time.Millisecond, 5000, false, nil) // a cache hit: no bytes
	m.Fetched(time.Second, 0, false, io.EOF)
	m.HealthProbe(3*time.Millisecond, nil)

	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, "127.0.0.1:0", nil, func(a net.Addr) { addrs <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}()
	scrape := func() string {
		resp, err := http.Get("http://" + addr.String() + Path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /metrics = %d", resp.StatusCode)
		}
		return string(b)
	}
	body := scrape()
	for _, want := range []string{
		`sutra_agent_build_info{goversion="go`,
		`sutra_agent_nodes{state="running"} 2`,
		`sutra_agent_nodes{state="backoff"} 1`,
		`sutra_agent_nodes{state="failed"} 0`,
		`sutra_agent_nodes_up 2`,
		`sutra_agent_node_restarts 9`,
		`sutra_agent_cache_bytes 1234`,
		`sutra_agent_heartbeats_total{result="ok"} 2`,
		`sutra_agent_heartbeats_total{result="failed"} 1`,
		`sutra_agent_fetch_failures_total 1`,
		`sutra_agent_fetched_bytes_total 5000`,
		`sutra_agent_fetch_seconds_count{result="ok"} 2`,
		`sutra_agent_fetch_seconds_count{result="failed"} 1`,
		`sutra_agent_health_probe_seconds_count{result="ok"} 1`,
		"process_cpu_seconds_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if !strings.Contains(body, "sutra_agent_cert_expiry_timestamp_seconds ") || strings.Contains(body, "sutra_agent_upgrade_phase{") {
		t.Errorf("want a certificate expiry and no upgrade phase while idle")
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on the agent's scrape: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not found (apt-get install prometheus): the agent's scrape was not linted")
	}
	phase.Store("verifying")
	if body := scrape(); !strings.Contains(body, `sutra_agent_upgrade_phase{phase="verifying"} 1`) {
		t.Errorf("no upgrade phase during a self-update:\n%s", body)
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
	resp, err := http.Get("http://" + addr.String() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other = %d, want 404", resp.StatusCode)
	}

	s := m.Summary()
	if s.NodesRunning != 2 || s.RestartsTotal != 9 || s.CacheBytes != 1234 || s.FetchFailuresTotal != 1 || s.CertExpiryUnix != expiry.Unix() {
		t.Fatalf("summary = %+v, want 2 running, 9 restarts, 1234 bytes, 1 fetch failure, expiry %d", s, expiry.Unix())
	}
}

// No cache dir and no certificate yet (before enrollment): the endpoint
// still answers, without those series, and the summary leaves them zero.
func TestAgentMetricsBeforeEnrollment(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Options{CacheDir: filepath.Join(dir, "absent"), CertFile: filepath.Join(dir, "agent.crt"), State: func() Snapshot { return Snapshot{} }})
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Summary(); s.CertExpiryUnix != 0 || s.CacheBytes != 0 {
		t.Fatalf("summary = %+v", s)
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without State succeeded")
	}
	if err := m.Serve(context.Background(), "256.0.0.1:1", nil, nil); err == nil {
		t.Fatal("Serve on a bad address succeeded")
	}
}

// FuzzCertExpiry: hostile certificate files never panic and only a real
// certificate yields an expiry.
func FuzzCertExpiry(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n" + strings.Repeat("A", 5000) + "\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{0, 0xff, '-', '-'})
	f.Fuzz(func(t *testing.T, b []byte) {
		exp, err := parseCertExpiry(b)
		if err == nil && exp.IsZero() {
			t.Fatal("no error and no expiry")
		}
	})
}
