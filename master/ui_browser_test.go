package master_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "TestDashboardInBrowser copies its screenshots into docs/ (also SUTRA_UPDATE_SCREENSHOTS=1)")

// chromium finds a Chromium or Chrome to drive, "" when there is none.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Issue 15, the dashboard in a real headless Chromium against the real
// master (master.Run: TLS gRPC, the HTTP port) with agents enrolled and
// connected over mutual TLS: no cookie sends the browser to the login page;
// the operator logs in with the token; the agents page lists the agents;
// a node spawned over gRPC appears on the open nodes page without a reload
// (Server-Sent Events); a POST without the CSRF token is refused 403; a bad
// URL shows an HTML error page, not a stack trace; logout ends the session.
// A screenshot of each page is saved under the test's temp dir (and copied
// into docs/ with -update-screenshots).
func TestDashboardInBrowser(t *testing.T) {
	exe := chromium()
	if exe == "" {
		t.Skip("Chromium is not installed (apt-get install chromium): the browser test of the dashboard needs it")
	}
	data := filepath.Join(t.TempDir(), "data")
	// A published storage-server 1.5.0 for the rollout.
	bin := filepath.Join(filepath.Dir(data), "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "storage-server-1.5.0-linux-x86_64"), []byte("#!/bin/sh\necho storage-server 1.5.0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var console testutil.SyncBuffer
	addrs, _ := runMaster(t, data, &console)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	op := operatorClient(t, data, addrs.GRPC)
	tok := joinToken(t, ctx, op, 10)
	for i, host := range []string{"db-eu-1", "db-eu-2", "db-us-1"} {
		a, err := enrollAgentAs(t, ctx, addrs.GRPC, tok, fmt.Sprintf("agent-%d", i+1), host)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.rpc.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: a.id, Hostname: host, Platform: "linux", Arch: "x86_64",
			AgentVersion: "1.0.0", MaxStorageNodes: 4, Labels: map[string]string{"zone": host[3:5]}}); err != nil {
			t.Fatal(err)
		}
		nodes := []*gridv1.NodeStatus{{NodeId: a.id + "-n1", State: gridv1.NodeState_NODE_STATE_RUNNING, Pid: 4242, Endpoint: "127.0.0.1:7100", Version: "1.4.2"}}
		if i == 1 {
			nodes = append(nodes, &gridv1.NodeStatus{NodeId: a.id + "-n2", State: gridv1.NodeState_NODE_STATE_BACKOFF, RestartCount: 3, LastExit: "exit status 1",
				LastLogLines: []string{"storage-server: opening /var/lib/sutra/n2", "storage-server: fatal: disk full"}})
		}
		if _, err := a.rpc.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: a.id, Nodes: nodes}); err != nil {
			t.Fatal(err)
		}
	}
	tokenBytes, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	base := "http://" + addrs.HTTP

	// A rollout of storage-server 1.5.0 over the RolloutService (retried
	// while the catalog hashes the binary).
	creds, err := opauth.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	rconn, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close()
	var ro *gridv1.Rollout
	for deadline := time.Now().Add(15 * time.Second); ; {
		ro, err = gridv1.NewRolloutServiceClient(rconn).StartRollout(ctx, &gridv1.StartRolloutRequest{Artifact: "storage-server", Version: "1.5.0", Canary: 1, SoakMs: 120000, HealthyDeadlineMs: 600000, ProgressDeadlineMs: 1800000})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("StartRollout: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	apiState := func() string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/api/rollouts/"+ro.GetId(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			State string `json:"state"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /api/rollouts/%s: %d %v", ro.GetId(), resp.StatusCode, err)
		}
		return v.State
	}

	// Without a cookie the dashboard sends a client to the login page.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(base + "/ui/agents")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login") {
		t.Fatalf("no cookie: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	shots := t.TempDir()
	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 860))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			p := filepath.Join(shots, "dashboard-"+name+".png")
			if err := os.WriteFile(p, buf, 0o644); err != nil {
				return err
			}
			t.Logf("screenshot %s", p)
			fmt.Printf("screenshot: %s\n", p)
			return nil
		})
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	value := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(bctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}

	// Log in: the browser lands on the login page, then on the agents.
	run("login page", chromedp.Navigate(base+"/ui/agents"), chromedp.WaitVisible(chromedp.ID("token")), shot("login"))
	if url := value("location", chromedp.Location()); !strings.HasPrefix(url, base+"/ui/login?next=") {
		t.Fatalf("not sent to the login page: %s", url)
	}
	run("login", chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("agents")))
	text := value("agents", chromedp.Text(chromedp.ID("agents")))
	for _, want := range []string{"agent-1", "agent-2", "agent-3", "db-eu-2", "healthy", "linux/x86_64"} {
		if !strings.Contains(text, want) {
			t.Fatalf("agents page lacks %q:\n%s", want, text)
		}
	}
	run("agents", shot("agents"))

	// A node appears live on the open nodes page (no reload: the marker
	// set in the page survives).
	run("nodes page", chromedp.Navigate(base+"/ui/nodes"), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="agent-1-n1"]`)))
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById('live').textContent.includes('live')`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the live stream did not open: %v", err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.sutraMarker = 42`)); err != nil {
		t.Fatal(err)
	}
	if _, err := op.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "agent-3", NodeId: "live-node"}); err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithTimeout(bctx, 10*time.Second)
	if err := chromedp.Do(lctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="live-node"]`))); err != nil {
		lcancel()
		t.Fatalf("the spawned node did not appear live: %v", err)
	}
	lcancel()
	marker, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.sutraMarker || 0`))
	if err != nil || marker != 42 {
		t.Fatalf("the page was reloaded (marker %d, %v)", marker, err)
	}
	run("nodes", shot("nodes"))

	// The other pages.
	for _, p := range []struct{ name, path, sel string }{
		{"overview", "/ui/", "#cluster-status"},
		{"agent", "/ui/agents/agent-2", "#nodes-h"},
		{"binaries", "/ui/binaries", "#binaries"},
		{"rollouts", "/ui/rollouts", "main"},
		{"events", "/ui/events", "#type"},
	} {
		run(p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.sel)), shot(p.name))
	}
	run("agent page", chromedp.Navigate(base+"/ui/agents/agent-2"), chromedp.WaitVisible(chromedp.CSS("main")))
	if text := value("agent text", chromedp.Text(chromedp.CSS("main"))); !strings.Contains(text, "fatal: disk full") || !strings.Contains(text, "backoff") {
		t.Fatalf("agent page lacks the failing node's log lines:\n%s", text)
	}

	// Phone-sized viewport.
	run("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(base+"/ui/agents"),
		chromedp.WaitVisible(chromedp.ID("agents")), shot("agents-phone"), chromedp.EmulateViewport(1280, 860))

	// A bad URL: an HTML error page, no stack trace.
	run("bad url", chromedp.Navigate(base+"/ui/no/such/page"), chromedp.WaitVisible(chromedp.CSS("main")), shot("error"))
	if text := value("error text", chromedp.Text(chromedp.CSS("main"))); !strings.Contains(text, "Not Found") || !strings.Contains(text, "404") || strings.Contains(text, "goroutine") {
		t.Fatalf("bad URL page:\n%s", text)
	}

	// CSRF: a same-origin POST from the logged-in page without the token
	// is refused 403; the session survives it.
	run("overview", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.ID("cluster-status")))
	code, err := chromedp.Run(bctx, chromedp.Evaluate[int](`fetch('/ui/logout', {method: 'POST', body: new URLSearchParams({csrf: 'forged'})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || code != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d %v", code, err)
	}

	// Pause and resume the rollout from its page; the API sees each state.
	t.Run("RolloutPauseResume", func(t *testing.T) {
		page := base + "/ui/rollouts/" + ro.GetId()
		run("rollout page", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("action-pause")), shot("rollout"))
		run("pause", chromedp.Click(chromedp.ID("action-pause")), chromedp.WaitVisible(chromedp.ID("action-resume")))
		if st := apiState(); st != "paused" {
			t.Fatalf("after pause the API says %q", st)
		}
		if text := value("rollout text", chromedp.Text(chromedp.ID("rollout-state"))); text != "paused" {
			t.Fatalf("page state %q", text)
		}
		run("resume", chromedp.Click(chromedp.ID("action-resume")), chromedp.WaitVisible(chromedp.ID("action-pause")))
		if st := apiState(); st == "paused" || st == "aborted" || st == "" {
			t.Fatalf("after resume the API says %q", st)
		}
	})

	// Logout, then the dashboard sends the browser to the login page again.
	run("logout", chromedp.Click(chromedp.CSS(`form.logout button`)), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.Navigate(base+"/ui/agents"), chromedp.WaitVisible(chromedp.ID("token")))
	if url := value("location", chromedp.Location()); !strings.Contains(url, "/ui/login") {
		t.Fatalf("after logout: %s", url)
	}

	if *updateScreenshots || os.Getenv("SUTRA_UPDATE_SCREENSHOTS") == "1" {
		docs := filepath.Join("..", "docs")
		if err := os.MkdirAll(docs, 0o755); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(shots)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(shots, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(docs, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("screenshots copied into %s", docs)
	}
}
