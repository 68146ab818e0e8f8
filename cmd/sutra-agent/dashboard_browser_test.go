package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sutragrid/sutra/agent"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/master"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Issue 15, the dashboard with a real agent: headless Chromium logged in
// to the real master's /ui/ watches the agents page while a real agent
// (agent.Run, enrolled with a join token over mTLS) starts: the agent
// appears without a reload, and a node spawned for it over gRPC appears on
// its open page without a reload (Server-Sent Events).
func TestDashboardShowsARealAgentLive(t *testing.T) {
	var exe string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		t.Skip("Chromium is not installed (apt-get install chromium): the browser test of the dashboard needs it")
	}
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	dataDir := filepath.Join(root, "data")
	mctx, mcancel := context.WithCancel(ctx)
	go func() {
		done <- master.Run(mctx, master.Options{
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
	defer func() { mcancel(); <-done }()
	creds, err := opauth.Load(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	op := gridv1.NewGridMasterClient(conn)
	jt, err := op.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addrs.HTTP

	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 860))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	waitLive := func() {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById('live').textContent.includes('live')`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("the live stream did not open: %v", err)
		}
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.sutraMarker = 7`)); err != nil {
			t.Fatal(err)
		}
	}
	notReloaded := func() {
		t.Helper()
		if m, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.sutraMarker || 0`)); err != nil || m != 7 {
			t.Fatalf("the page was reloaded (marker %d, %v)", m, err)
		}
	}
	do("login", chromedp.Navigate(base+"/ui/agents"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), strings.TrimSpace(string(token))), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("agents")))
	waitLive()

	// The real agent starts while the agents page is open.
	cfgPath := filepath.Join(root, "agent-config.toml")
	cfgText := fmt.Sprintf("[agent]\nagent_id = \"web1\"\nmaster_host = %q\njoin_token = %q\ncache_dir = %q\nagent_data_dir = %q\n[storage]\nmaster_binary_url = %q\n[monitoring]\nheartbeat_interval_secs = 1\n",
		addrs.GRPC, jt.GetToken(), filepath.Join(root, "cache"), filepath.Join(root, "agent"), base)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	agCtx, agCancel := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(agCtx, agent.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), StopGrace: time.Second})
	}()
	defer func() { agCancel(); <-agentDone }()
	wctx, wcancel := context.WithTimeout(bctx, 30*time.Second)
	err = chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/agents/web1"]`)))
	wcancel()
	if err != nil {
		t.Fatalf("the real agent did not appear on the open agents page: %v", err)
	}
	notReloaded()

	// A node spawned for it appears on its open page.
	do("agent page", chromedp.Navigate(base+"/ui/agents/web1"), chromedp.WaitVisible(chromedp.ID("nodes-h")))
	waitLive()
	if _, err := op.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "web1", NodeId: "web1-live"}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel = context.WithTimeout(bctx, 15*time.Second)
	err = chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="web1-live"]`)))
	wcancel()
	if err != nil {
		t.Fatalf("the spawned node did not appear on the open agent page: %v", err)
	}
	notReloaded()
}
