//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/supervisor"
)

// TestUnderSupervisor runs the real storage-server under the supervisor: a
// SIGKILLed node comes back on the same port and data dir with its
// acknowledged writes, and a requested stop is a clean exit 0.
func TestUnderSupervisor(t *testing.T) {
	s, err := supervisor.New(supervisor.Options{
		LogDir:  t.TempDir(),
		Health:  supervisor.HealthOptions{Interval: 200 * time.Millisecond},
		Restart: supervisor.PolicyOptions{InitialDelay: 100 * time.Millisecond, Rand: func() float64 { return 0 }},
	})
	if err != nil {
		t.Fatal(err)
	}
	port := testutil.FreePort(t)
	n, err := s.Start(supervisor.Spec{
		Name: "node-1", Path: binary,
		Args:      []string{"--port", fmt.Sprint(port), "--data-dir", t.TempDir(), "--bind", "127.0.0.1"},
		Env:       []string{"NODE_ID=node-1"},
		HealthURL: supervisor.HealthURL(port),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.StopAll(context.Background()) })
	running := func(exclude int) supervisor.Status {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if st := n.Status(); st.State == supervisor.StateRunning && st.PID != 0 && st.PID != exclude {
				return st
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("node not running; status %+v", n.Status())
		return supervisor.Status{}
	}
	first := running(0)
	url := fmt.Sprintf("http://127.0.0.1:%d/kv/survivor", port)
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader("still here"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT = %d", resp.StatusCode)
	}
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := running(first.PID)
	if second.Restarts != 1 || second.LastExit != "signal: killed" {
		t.Errorf("after kill -9: restarts %d last exit %q", second.Restarts, second.LastExit)
	}
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "still here" {
		t.Errorf("GET after restart = %d %q, want the acknowledged value", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := n.Status(); st.LastExit != "exit status 0" {
		t.Errorf("stop: last exit %q, want exit status 0; log tail %q", st.LastExit, st.LastLog)
	}
}
