//go:build unix

package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the child process: with SUPERVISOR_TEST_HELPER
// set it runs one of the helper modes below instead of the tests.
const helperEnv = "SUPERVISOR_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		runHelper(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelper(mode string) {
	switch mode {
	case "serve":
		// Serves /healthz on HELPER_PORT: 200 while HELPER_HEALTHFILE exists
		// (or always when unset); exits 0 on SIGTERM.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("HELPER_PORT"))
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(2)
		}
		hf := os.Getenv("HELPER_HEALTHFILE")
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if hf != "" {
				if _, err := os.Stat(hf); err != nil {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			}
			fmt.Fprintln(w, "ok")
		}))
		fmt.Println("serving on", ln.Addr())
		<-sig
		fmt.Println("got SIGTERM")
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		select {}
	case "grandchild":
		// Starts a grandchild (in the same process group) and writes its pid.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=sleep")
		if err := cmd.Start(); err != nil {
			fmt.Println("start grandchild:", err)
			os.Exit(2)
		}
		pf := os.Getenv("HELPER_PIDFILE")
		_ = os.WriteFile(pf+".tmp", []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
		_ = os.Rename(pf+".tmp", pf)
		select {}
	case "sleep":
		select {}
	case "exit":
		for i := range 30 {
			fmt.Println("exit helper line", i)
		}
		fmt.Fprintln(os.Stderr, "fatal: exiting at once")
		os.Exit(3)
	case "spam":
		line := strings.Repeat("x", 1000)
		for i := range 150 {
			fmt.Printf("spam %03d %s\n", i, line)
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("done")
	default:
		fmt.Println("unknown helper mode", mode)
		os.Exit(2)
	}
}

// helperSpec runs the test binary in mode.
func helperSpec(t *testing.T, name, mode string, env ...string) Spec {
	t.Helper()
	return Spec{Name: name, Path: helperPath(t), Env: append([]string{helperEnv + "=" + mode}, env...)}
}

func helperPath(t testing.TB) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
