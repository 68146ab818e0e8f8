//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/testproc"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// slowProxy stands between agents and the master's binary API: everything
// passes through, except the downloads of the versions in drip, which send
// one byte every 200 ms for as long as the client stays.
type slowProxy struct {
	srv *httptest.Server

	mu       sync.Mutex
	drip     map[string]bool // file name -> drip
	dripping int             // downloads dripping now
}

func newSlowProxy(t *testing.T, g *grid, versions ...string) *slowProxy {
	t.Helper()
	target, err := url.Parse(g.httpURL())
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{drip: map[string]bool{}}
	for _, v := range versions {
		p.drip[bins.serverNames[v]] = true
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, isDownload := strings.CutPrefix(r.URL.Path, "/binaries/")
		p.mu.Lock()
		drip := isDownload && p.drip[name]
		if drip {
			p.dripping++
		}
		p.mu.Unlock()
		if !drip {
			rp.ServeHTTP(w, r)
			return
		}
		defer func() {
			p.mu.Lock()
			p.dripping--
			p.mu.Unlock()
		}()
		resp, err := http.Get(g.httpURL() + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for _, h := range []string{"Content-Type", "Content-Length", "ETag", "Last-Modified"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		rc := http.NewResponseController(w)
		buf := make([]byte, 1)
		for {
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				return
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
			_ = rc.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *slowProxy) active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dripping
}

// nodeGone waits until the master no longer knows node id (it dropped the
// record once the agent applied the stop).
func (g *grid) nodeGone(id string, timeout time.Duration) {
	g.t.Helper()
	testproc.WaitFor(g.t, timeout, "master forgets stopped node "+id, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := g.rpc.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: id})
		if status.Code(err) == codes.NotFound {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, "desired " + strconv.FormatBool(n.GetDesired()) + ", " + describeNode(n.GetStatus())
	})
}

// Issue 10 item 2: while the download of a new storage-server version
// drips (it would take hours), a spawn (its version cached) and a stop are
// acted on at once: the new node runs on the cached version, the stopped
// node's process is gone and the master drops it, and the agent keeps
// applying generations; the download is still in progress at the end.
func TestSpawnAndStopWhileDownloadDrips(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	proxy := newSlowProxy(t, g, v110)
	a := g.newAgentWith("agent-drip", "", agentConfig{binaryURL: proxy.srv.URL})
	a.waitRegistered()
	runNode(a, "node-keep")
	gone := runNode(a, "node-gone")

	g.stage(v110)
	g.waitPublished(v110)
	g.setDesiredVersion(a.id, v110)
	testproc.WaitFor(t, long, "the agent downloading 1.1.0 (dripping)", func() (bool, string) {
		return proxy.active() == 1, strconv.Itoa(proxy.active()) + " dripping downloads"
	})

	asked := time.Now()
	a.spawn("node-new")
	if out, code := g.runCLI("nodes", "stop", "node-gone"); code != 0 {
		t.Fatalf("sutra nodes stop node-gone: exit %d\n%s", code, out)
	}
	// Generous deadlines (a loaded machine); the old agent took as long as
	// the download (here: hours).
	st := g.waitRunning("node-new")
	if st.GetVersion() != v100 {
		t.Errorf("node-new runs %s, want the cached %s while %s downloads", st.GetVersion(), v100, v110)
	}
	testproc.WaitFor(t, short, "stopped node's process gone", func() (bool, string) {
		return !alive(int(gone.GetPid())), "alive"
	})
	g.nodeGone("node-gone", short)
	t.Logf("spawn and stop took effect %s after they were asked for, with the download stuck", time.Since(asked).Round(time.Millisecond))
	g.waitAgent(a.id, "applying the latest generation", func(ag *gridv1.Agent) bool {
		return ag.GetAppliedGeneration() == ag.GetDesired().GetGeneration()
	})
	if n := proxy.active(); n != 1 {
		t.Fatalf("%d downloads dripping at the end, want the one still in progress (the test must overlap it)", n)
	}
	if pids := nodeProcesses(a.nodeDataDir("node-gone")); len(pids) != 0 {
		t.Errorf("processes still serving the stopped node: %v", pids)
	}
	if keep := g.waitRunning("node-keep"); keep.GetVersion() != v100 {
		t.Errorf("node-keep runs %s, want %s until 1.1.0 is downloaded", keep.GetVersion(), v100)
	}
}

// Issue 10 item 3: a node stopped before it ever started (the agent's first
// download is stuck) does not stay "stopping": the agent reports it stopped
// and the master drops it.
func TestNodeStoppedBeforeItStartedIsDropped(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	proxy := newSlowProxy(t, g, v100)
	a := g.newAgentWith("agent-never", "", agentConfig{binaryURL: proxy.srv.URL})
	a.waitRegistered()
	a.spawn("node-never")
	testproc.WaitFor(t, long, "the agent downloading 1.0.0 (dripping)", func() (bool, string) {
		return proxy.active() == 1, strconv.Itoa(proxy.active()) + " dripping downloads"
	})
	g.waitNode("node-never", "reported waiting for its binary", func(n *gridv1.StorageNode) bool {
		return n.GetStatus().GetState() == gridv1.NodeState_NODE_STATE_BACKOFF
	})
	if out, code := g.runCLI("nodes", "stop", "node-never"); code != 0 {
		t.Fatalf("sutra nodes stop node-never: exit %d\n%s", code, out)
	}
	g.nodeGone("node-never", short)
	if proxy.active() != 1 {
		t.Errorf("the download ended before the node was dropped; the test must overlap it")
	}
	if n := a.logCount("node stopped before it started", "node=node-never"); n != 1 {
		t.Errorf("agent logged %d stops-before-start of node-never, want 1", n)
	}
}

// Issue 10 item 3: spawn/stop cycles of distinct nodes with real processes
// on a two-port range: a stopped node's record is deleted (its data dir
// stays), so its port is free for the next node and no spawn ever fails
// with "no free port"; the node record ends empty.
func TestSpawnStopCyclesOnTwoPorts(t *testing.T) {
	t.Parallel()
	g := newGrid(t, v100)
	const first = 65534
	a := g.newAgentWith("agent-cycles", "", agentConfig{portStart: first, maxNodes: 2})
	a.waitRegistered()
	const cycles = 5 // the old agent failed the third: both ports stayed recorded
	for i := range cycles {
		id := "node-cycle-" + strconv.Itoa(i)
		st := runNode(a, id)
		_, port, _ := strings.Cut(st.GetEndpoint(), ":")
		if p, _ := strconv.Atoi(port); p < first || p > 65535 {
			t.Errorf("%s on port %d, want %d-65535", id, p, first)
		}
		if out, code := g.runCLI("nodes", "stop", id, "--wait", "--wait-timeout", "90s"); code != 0 {
			t.Fatalf("cycle %d: sutra nodes stop %s --wait: exit %d\n%s", i, id, code, out)
		}
		g.nodeGone(id, short)
		if _, err := os.Stat(a.nodeDataDir(id)); err != nil {
			t.Errorf("data dir of stopped %s: %v", id, err)
		}
	}
	if n := a.logCount("no free port"); n != 0 {
		t.Errorf("agent logged %d 'no free port' errors", n)
	}
	testproc.WaitFor(t, short, "empty node record", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(a.dataDir, "nodes.json"))
		if err != nil {
			return false, err.Error()
		}
		var rec struct {
			Nodes map[string]json.RawMessage `json:"nodes"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return false, err.Error()
		}
		return len(rec.Nodes) == 0, string(b)
	})
}
