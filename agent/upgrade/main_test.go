//go:build unix

package upgrade

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testutil"
)

// builds are the test program's binaries by label, built in TestMain.
var builds = map[string]string{}

// buildSpecs: label → (stamped version, mode). "1.4.0" is stamped 1.0.5: a
// binary the master mislabels.
var buildSpecs = []struct{ label, version, mode string }{
	{"1.0.0", "1.0.0", "ok"},
	{"1.1.0", "1.1.0", "ok"},
	{"1.2.0", "1.2.0", "broken"},
	{"1.3.0", "1.3.0", "nocommit"},
	{"1.4.0", "1.0.5", "ok"},
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(lockHolderEnv); dir != "" {
		os.Exit(holdLock(dir))
	}
	dir, err := os.MkdirTemp("", "upgrade-test-bin-")
	if err != nil {
		panic(err)
	}
	for _, b := range buildSpecs {
		out := filepath.Join(dir, "testagent-"+b.label)
		err := testutil.GoBuild(testutil.Build{Out: out, LDFlags: testutil.VersionFlag(b.version) + " -X main.mode=" + b.mode,
			Pkgs: []string{"./testdata/testagent"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "build testagent:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		builds[b.label] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testMaster serves the binary API for sutra-agent (/api/artifacts/...),
// downloads, and two test endpoints the test program uses: /register
// (records the version that registered) and /desired (the desired version).
type testMaster struct {
	srv *httptest.Server

	mu        sync.Mutex
	bins      map[string][]byte // by version
	sigs      map[string][]byte // release signatures by file name
	desired   string
	registers []string // versions, in order
	polls     map[string]int
	downloads map[string]int
}

func newTestMaster(t *testing.T) *testMaster {
	m := &testMaster{bins: map[string][]byte{}, sigs: map[string][]byte{}, polls: map[string]int{}, downloads: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/artifacts/sutra-agent/{version}/{platform}/{arch}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		b, ok := m.bins[r.PathValue("version")]
		if !ok {
			httpjson.WriteError(w, http.StatusNotFound, "no such version")
			return
		}
		httpjson.Write(w, http.StatusOK, m.info(r.PathValue("version"), b))
	})
	mux.HandleFunc("POST /api/artifacts/sutra-agent/{version}/{platform}/{arch}/verify", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		b, ok := m.bins[r.PathValue("version")]
		m.mu.Unlock()
		if !ok {
			httpjson.WriteError(w, http.StatusNotFound, "no such version")
			return
		}
		body, _ := io.ReadAll(r.Body)
		want := testutil.SHA256(b)
		httpjson.Write(w, http.StatusOK, map[string]any{"valid": bytes.Contains(body, []byte(want)), "expected_checksum": want})
	})
	mux.HandleFunc("GET /binaries/{name}", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		if sig, ok := m.sigs[r.PathValue("name")]; ok {
			m.mu.Unlock()
			_, _ = w.Write(sig)
			return
		}
		var data []byte
		for v, b := range m.bins {
			if m.filename(v) == r.PathValue("name") {
				data = b
				m.downloads[v]++
			}
		}
		m.mu.Unlock()
		if data == nil {
			httpjson.WriteError(w, http.StatusNotFound, "no such file")
			return
		}
		http.ServeContent(w, r, r.PathValue("name"), time.Unix(1, 0), bytes.NewReader(data))
	})
	mux.HandleFunc("GET /register", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.registers = append(m.registers, r.URL.Query().Get("version"))
		m.mu.Unlock()
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /desired", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.polls[r.URL.Query().Get("version")]++
		d := m.desired
		m.mu.Unlock()
		io.WriteString(w, d+"\n")
	})
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	return m
}

func (m *testMaster) filename(v string) string {
	p, a, _ := platform.Current()
	return "sutra-agent-" + v + "-" + p + "-" + a
}

func (m *testMaster) info(v string, b []byte) map[string]any {
	p, a, _ := platform.Current()
	return map[string]any{"artifact": "sutra-agent", "version": v, "platform": p, "arch": a,
		"checksum": testutil.SHA256(b), "size_bytes": len(b), "path": m.filename(v), "uploaded_at": 1}
}

func (m *testMaster) publish(t *testing.T, label string) {
	data := mustRead(t, builds[label])
	m.mu.Lock()
	m.bins[label] = data
	m.mu.Unlock()
}

func (m *testMaster) setDesired(v string) {
	m.mu.Lock()
	m.desired = v
	m.mu.Unlock()
}

func (m *testMaster) snapshot() (registers []string, polls map[string]int, downloads map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.registers), clone(m.polls), clone(m.downloads)
}

func clone(in map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range in {
		out[k] = v
	}
	return out
}

// serviceManager stands in for systemd's Restart=always: it runs the
// executable path, and starts it again whenever it exits, a bounded number
// of times.
type serviceManager struct {
	target string
	args   []string
	log    testutil.SyncBuffer

	mu      sync.Mutex
	cur     *exec.Cmd
	stopped bool
	exits   []int
	done    chan struct{}
}

func startService(t *testing.T, target string, args ...string) *serviceManager {
	s := &serviceManager{target: target, args: args, done: make(chan struct{})}
	go s.loop(400)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("service log:\n%s", s.log.String())
		}
	})
	return s
}

func (s *serviceManager) loop(maxStarts int) {
	defer close(s.done)
	for i := 0; i < maxStarts; i++ {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		cmd := exec.Command(s.target, s.args...)
		cmd.Stdout, cmd.Stderr = &s.log, &s.log
		err := cmd.Start()
		if err == nil {
			s.cur = cmd
		}
		s.mu.Unlock()
		if err != nil {
			fmt.Fprintf(&s.log, "service manager: start %s: %v\n", s.target, err)
		} else {
			_ = cmd.Wait()
			s.mu.Lock()
			s.exits = append(s.exits, cmd.ProcessState.ExitCode())
			s.cur = nil
			s.mu.Unlock()
		}
		time.Sleep(100 * time.Millisecond) // RestartSec
	}
}

func (s *serviceManager) stop() {
	s.mu.Lock()
	s.stopped = true
	if s.cur != nil {
		_ = s.cur.Process.Signal(syscall.SIGTERM)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.mu.Lock()
		if s.cur != nil {
			_ = s.cur.Process.Kill()
		}
		s.mu.Unlock()
		<-s.done
	}
}

// waitGone waits for a detached guard process to end, so that it does not
// outlive the test's temporary directory.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		return
	}
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("guard pid %d to exit", pid), func() bool {
		return syscall.Kill(pid, 0) != nil || isZombie(pid)
	})
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// fixture is an installed agent at a version, with its data and cache dirs.
type fixture struct {
	dir, target, data, cache string
}

func install(t *testing.T, label string) fixture {
	dir := t.TempDir()
	f := fixture{dir: dir, target: filepath.Join(dir, "bin", "sutra-agent"), data: filepath.Join(dir, "data"), cache: filepath.Join(dir, "cache")}
	if err := os.MkdirAll(filepath.Dir(f.target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.target, mustRead(t, builds[label]), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) args(m *testMaster, extra ...string) []string {
	return append([]string{"--data-dir", f.data, "--cache-dir", f.cache, "--master", m.srv.URL}, extra...)
}

func (f fixture) state(t *testing.T) State {
	t.Helper()
	s, err := ReadState(f.data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func versionOf(t *testing.T, path string) string {
	t.Helper()
	out, err := RunVersion(context.Background(), path)
	if err != nil {
		t.Fatalf("%s --version: %v", path, err)
	}
	return out
}
