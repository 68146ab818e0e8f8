package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/master"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// scrapeValue GETs url (with token, if any) and returns the value of the
// first series starting with prefix.
func scrapeValue(url, token, prefix string) (float64, bool) {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Issue 15 end to end (here, not in agent/: agent tests may not import the
// master, internal/archtest): a real agent (enrolled with a join token over mTLS)
// with metrics_addr serves its metrics, and its heartbeat summary reaches
// the real master's /metrics as fleet sums: the certificate expiry the
// agent reads from its own certificate, and its failed binary fetches (the
// master publishes none).
func TestAgentMetricsReachTheMaster(t *testing.T) {
	root := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	dataDir := filepath.Join(root, "data")
	go func() {
		done <- master.Run(ctx, master.Options{
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: filepath.Join(root, "bin"), DataDir: dataDir,
			ShutdownTimeout: 5 * time.Second, Ready: func(a master.Addrs) { ready <- a },
		})
	}()
	var addrs master.Addrs
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("master.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	defer func() { cancel(); <-done }()
	creds, err := opauth.Load(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	op, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	jt, err := gridv1.NewGridMasterClient(op).CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}

	free, err := net.Listen("tcp", "127.0.0.1:0") // a free port for metrics_addr (port 0 is refused there)
	if err != nil {
		t.Fatal(err)
	}
	metricsPort := free.Addr().String()
	free.Close()
	cfgPath := filepath.Join(root, "agent-config.toml")
	cfgText := fmt.Sprintf("[agent]\nagent_id = \"m1\"\nmaster_host = %q\njoin_token = %q\ncache_dir = %q\nagent_data_dir = %q\nmetrics_addr = %q\n[storage]\nmaster_binary_url = %q\n[monitoring]\nheartbeat_interval_secs = 1\n",
		addrs.GRPC, jt.GetToken(), filepath.Join(root, "cache"), filepath.Join(root, "agent"), metricsPort, "http://"+addrs.HTTP)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := make(chan net.Addr, 1)
	actx, acancel := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(actx, agent.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), StopGrace: time.Second,
			MetricsReady: func(a net.Addr) { metricsAddr <- a }})
	}()
	defer func() { acancel(); <-agentDone }()
	var ma net.Addr
	select {
	case ma = <-metricsAddr:
	case err := <-agentDone:
		t.Fatalf("agent.Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent metrics endpoint not serving within 30s")
	}
	agentURL := "http://" + ma.String() + "/metrics"
	masterURL := "http://" + addrs.HTTP + "/metrics"
	tok := strings.TrimSpace(string(token))

	deadline := time.Now().Add(30 * time.Second)
	for {
		agentExp, ok1 := scrapeValue(agentURL, "", "sutra_agent_cert_expiry_timestamp_seconds ")
		fleetExp, ok2 := scrapeValue(masterURL, tok, "sutra_fleet_agent_cert_expiry_timestamp_seconds ")
		fails, ok3 := scrapeValue(masterURL, tok, "sutra_fleet_agent_fetch_failures ")
		hb, ok4 := scrapeValue(agentURL, "", `sutra_agent_heartbeats_total{result="ok"}`)
		if ok1 && ok2 && ok3 && ok4 && agentExp == fleetExp && agentExp > float64(time.Now().Unix()) && fails >= 1 && hb >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent cert expiry %v (%v), master's fleet expiry %v (%v), fleet fetch failures %v (%v), agent heartbeats %v (%v): want equal expiries in the future, failures >= 1, heartbeats >= 1",
				agentExp, ok1, fleetExp, ok2, fails, ok3, hb, ok4)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
