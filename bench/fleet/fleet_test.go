package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the bench's child master: bench
// re-executes os.Executable with -serve.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestBenchOverMTLS runs the harness with 20 agents over mutual TLS
// against the real master as a child process: every agent registers and
// heartbeats with its own certificate, the figures are sane, and after the
// master's kill -9 every agent is accepted again over a resumed TLS
// session (the master's ticket keys survive the restart; with per-process
// keys no reconnect resumes and this fails).
func TestBenchOverMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a master twice")
	}
	var out bytes.Buffer
	c := config{n: 20, conns: 4, nodes: 2, interval: time.Second, duration: 2 * time.Second, restart: true, rateLimit: "on", metrics: "on", resume: true, out: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := bench(ctx, c)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if r.plaintext || r.conns != 20 {
		t.Errorf("plaintext %v, %d connections: want mTLS with one connection per agent", r.plaintext, r.conns)
	}
	// 20 agents, one heartbeat a second each, over 2 s.
	if r.heartbeats < 20 || r.errors != 0 {
		t.Errorf("%d heartbeats, %d errors: want at least 20 and none", r.heartbeats, r.errors)
	}
	if r.p50 <= 0 || r.p99 < r.p50 || r.p99 > 5*time.Second {
		t.Errorf("p50 %s p99 %s: not sane", r.p50, r.p99)
	}
	if r.rss <= 1 || r.rss > 300 || r.rss2 <= 1 {
		t.Errorf("master peak RSS %.1f MiB, after the restart %.1f MiB: want 1 to 300", r.rss, r.rss2)
	}
	if r.cpu < 0 || r.cpu > 400 {
		t.Errorf("master CPU %.1f%%: not sane", r.cpu)
	}
	if r.reconnected != 20 || r.back <= 0 {
		t.Errorf("%d agents back after the restart (in %s): want all 20", r.reconnected, r.back)
	}
	// Without ticket keys that outlive the process none resumes; one agent
	// may still do a full handshake (a reconnect raced with the restart;
	// seen once in CI as 19 of 20), so most, not all, must resume.
	if r.resumed < r.reconnected*3/4 {
		t.Errorf("%d of %d reconnects after the master's restart resumed their TLS session: want nearly all", r.resumed, r.reconnected)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("reconnects that resumed their TLS session: %d of %d", r.resumed, r.reconnected)) {
		t.Error("the report does not say how many reconnects resumed")
	}
}

// TestBenchPlaintextBaseline: -plaintext still runs the old baseline.
func TestBenchPlaintextBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master")
	}
	var out bytes.Buffer
	c := config{n: 20, conns: 4, nodes: 2, interval: time.Second, duration: time.Second, plaintext: true, rateLimit: "on", metrics: "on", out: &out}
	r, err := bench(context.Background(), c)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !r.plaintext || r.conns != 4 || r.heartbeats < 10 || r.errors != 0 {
		t.Errorf("plaintext %v, %d connections, %d heartbeats, %d errors", r.plaintext, r.conns, r.heartbeats, r.errors)
	}
}

// TestBenchRollout runs -rollout with 20 agents: a new storage-server
// version is published in the child master's binaries dir, rolled out in
// waves 1,10,50,100 %, every simulated agent reports its nodes on it, and
// the rollout completes no faster than its waves × soak.
func TestBenchRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master and rolls out a version")
	}
	var out bytes.Buffer
	c := config{n: 20, conns: 4, nodes: 2, interval: time.Second, duration: time.Second, rateLimit: "on", metrics: "on", resume: true,
		rollout: true, soak: 500 * time.Millisecond, upgradeDelay: 100 * time.Millisecond, out: &out}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := bench(ctx, c)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	ro := r.ro
	if ro == nil || ro.state != "completed" || ro.upgraded != 20 {
		t.Fatalf("rollout %+v: want completed with all 20 agents upgraded", ro)
	}
	if ro.waves != 4 || ro.took < ro.minimum || ro.took > 30*time.Second {
		t.Errorf("%d waves in %s (minimum %s): want 4 waves, no faster than the minimum", ro.waves, ro.took, ro.minimum)
	}
	if ro.heartbeats == 0 || ro.p99 <= 0 || ro.rss <= 1 {
		t.Errorf("during the rollout: %d heartbeats, p99 %s, peak RSS %.1f MiB: not measured", ro.heartbeats, ro.p99, ro.rss)
	}
	if !strings.Contains(out.String(), "theoretical minimum (waves × soak)") {
		t.Error("the report has no theoretical minimum")
	}
}
