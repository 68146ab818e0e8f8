package storagenode

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func runNode(t *testing.T, opts Options) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, "127.0.0.1:0", opts, func(a string) { addrc <- a }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case a := <-addrc:
		return a
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run not ready")
	}
	return ""
}

// Issue 9 item 14: a PUT whose body never completes — stopped or trickled —
// is answered 408 and its connection closed after RequestTimeout, instead of
// holding the connection open forever.
func TestSlowPutBodyIsCut(t *testing.T) {
	const timeout = time.Second
	addr := runNode(t, Options{DataDir: t.TempDir(), NodeID: "slow", RequestTimeout: timeout})
	for _, trickle := range []bool{false, true} {
		t.Run(fmt.Sprintf("trickle=%v", trickle), func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npart")
			stop := make(chan struct{})
			defer close(stop)
			if trickle {
				go func() {
					for {
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Millisecond):
							if _, err := conn.Write([]byte("x")); err != nil {
								return
							}
						}
					}
				}()
			}
			start := time.Now()
			conn.SetReadDeadline(time.Now().Add(timeout + 10*time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer to a stalled PUT body within %s: %v", timeout+10*time.Second, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("stalled PUT body = %d %q, want 408 JSON", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			t.Logf("answered after %s", time.Since(start).Round(10*time.Millisecond))
			// And the connection is closed.
			buf := make([]byte, 1)
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			if _, err := conn.Read(buf); err == nil {
				t.Error("connection still open after the 408")
			}
		})
	}
	// A normal request on a fresh connection still works.
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/kv/ok", strings.NewReader("v"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("PUT after the slow ones = %d", resp.StatusCode)
	}
}

func TestRequestTimeoutSetting(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := ParseConfig(nil, env(map[string]string{EnvRequestTimeout: "5s", EnvNodeID: "n"}), new(strings.Builder))
	if err != nil || c.RequestTimeout != 5*time.Second {
		t.Errorf("%s=5s: %v, %v", EnvRequestTimeout, c.RequestTimeout, err)
	}
	c, err = ParseConfig([]string{"--request-timeout", "2s"}, env(map[string]string{EnvRequestTimeout: "5s", EnvNodeID: "n"}), new(strings.Builder))
	if err != nil || c.RequestTimeout != 2*time.Second {
		t.Errorf("--request-timeout 2s over env 5s: %v, %v", c.RequestTimeout, err)
	}
	if _, err := ParseConfig(nil, env(map[string]string{EnvRequestTimeout: "never", EnvNodeID: "n"}), new(strings.Builder)); err == nil || !strings.Contains(err.Error(), EnvRequestTimeout) {
		t.Errorf("%s=never: %v, want an error naming it", EnvRequestTimeout, err)
	}
	if err := (Options{DataDir: "d", RequestTimeout: -1, IdleTimeout: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "request timeout") || !strings.Contains(err.Error(), "idle timeout") {
		t.Errorf("Validate = %v, want both timeouts named", err)
	}
}
