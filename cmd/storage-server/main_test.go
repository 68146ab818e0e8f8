//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

var binary string

const stampedVersion = "1.1.0"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "storage-server-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "storage-server")
	if err := testutil.GoBuild(testutil.Build{Out: binary, LDFlags: testutil.VersionFlag(stampedVersion), Pkgs: []string{"."}}); err != nil {
		fmt.Fprintln(os.Stderr, "build storage-server:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type node struct {
	cmd    *exec.Cmd
	port   int
	stderr *bytes.Buffer
	done   chan struct{}
	err    error
}

// start runs the storage-server with args and extra env, and waits until
// /healthz answers 200.
func start(t *testing.T, env []string, args ...string) *node {
	t.Helper()
	n := &node{stderr: &bytes.Buffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(binary, args...)
	n.cmd.Env = append(append(os.Environ(), "STORAGE_BIND=127.0.0.1"), env...)
	n.cmd.Stderr = n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.err = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("storage-server stderr:\n%s", n.stderr)
		}
	})
	return n
}

func (n *node) waitHealthy(t *testing.T, port int) map[string]string {
	t.Helper()
	n.port = port
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			t.Fatalf("storage-server exited early: %v\n%s", n.err, n.stderr)
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
		if err == nil {
			var h map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return h
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("storage-server never became healthy")
	return nil
}

func (n *node) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-n.done:
		return n.err
	case <-time.After(30 * time.Second):
		t.Fatal("storage-server did not exit")
		return nil
	}
}

func (n *node) url(key string) string { return fmt.Sprintf("http://127.0.0.1:%d/kv/%s", n.port, key) }

func TestVersionFlag(t *testing.T) {
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != stampedVersion {
		t.Errorf("storage-server --version = %q, want %q", got, stampedVersion)
	}
}

func TestBadFlagsExitNonZero(t *testing.T) {
	cmd := exec.Command(binary, "--port", "abc")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("--port abc = %v, want exit status 1", err)
	}
	if !strings.Contains(stderr.String(), "--port") {
		t.Errorf("stderr %q does not name --port", stderr.String())
	}
}

func TestFlagsWinOverEnv(t *testing.T) {
	envPort, flagPort := testutil.FreePort(t), testutil.FreePort(t)
	dir := t.TempDir()
	n := start(t, []string{
		fmt.Sprintf("STORAGE_PORT=%d", envPort), "STORAGE_PATH=" + filepath.Join(dir, "env"), "NODE_ID=from-env",
	}, "--port", fmt.Sprint(flagPort), "--node-id", "from-flag")
	h := n.waitHealthy(t, flagPort)
	if h["node_id"] != "from-flag" || h["version"] != stampedVersion {
		t.Errorf("healthz = %v, want node_id from-flag version %s", h, stampedVersion)
	}
	// The data dir came from the env (no --data-dir flag given).
	if _, err := os.Stat(filepath.Join(dir, "env", "data.db")); err != nil {
		t.Errorf("database not under STORAGE_PATH: %v", err)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", envPort), time.Second); err == nil {
		t.Errorf("something listens on STORAGE_PORT %d although --port was given", envPort)
	}
}

func TestSIGTERMExitsZero(t *testing.T) {
	port := testutil.FreePort(t)
	n := start(t, nil, "--port", fmt.Sprint(port), "--data-dir", t.TempDir(), "--node-id", "t")
	n.waitHealthy(t, port)
	req, _ := http.NewRequest(http.MethodPut, n.url("k"), strings.NewReader("v"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := n.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM = %v, want status 0", err)
	}
	if !strings.Contains(n.stderr.String(), "stopped") {
		t.Errorf("log has no 'stopped' line:\n%s", n.stderr)
	}
}

func TestAcknowledgedWriteSurvivesSIGKILL(t *testing.T) {
	port := testutil.FreePort(t)
	dir := t.TempDir()
	n := start(t, nil, "--port", fmt.Sprint(port), "--data-dir", dir, "--node-id", "k")
	n.waitHealthy(t, port)
	val := bytes.Repeat([]byte("durable"), 1000)
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodPut, n.url(fmt.Sprintf("key-%d", i)), bytes.NewReader(val))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT = %d", resp.StatusCode)
		}
	}
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = n.wait(t)

	port2 := testutil.FreePort(t)
	n2 := start(t, nil, "--port", fmt.Sprint(port2), "--data-dir", dir, "--node-id", "k")
	n2.waitHealthy(t, port2)
	for i := range 20 {
		resp, err := http.Get(n2.url(fmt.Sprintf("key-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, val) {
			t.Fatalf("after SIGKILL GET key-%d = %d (%d bytes), want 200 with %d bytes", i, resp.StatusCode, len(got), len(val))
		}
	}
}

func TestCrashKnob(t *testing.T) {
	port := testutil.FreePort(t)
	n := start(t, []string{"STORAGE_SERVER_CRASH_AFTER=300ms"}, "--port", fmt.Sprint(port), "--data-dir", t.TempDir(), "--node-id", "c")
	err := n.wait(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("crash knob exit = %v, want status 3", err)
	}
}
