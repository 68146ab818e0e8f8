package testutil

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB records what a helper reports instead of ending the test.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed string
	logs   []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = fmt.Sprintf(format, args...)
}
func (f *fakeTB) Log(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprint(args...))
}

func TestFreeAddrIsLoopbackAndFree(t *testing.T) {
	addr := FreeAddr(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q, want 127.0.0.1:port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on FreeAddr's %s: %v", addr, err)
	}
	ln.Close()
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d, want a port number", p)
	}
}

func TestSyncBufferConcurrentWriters(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("len after 8×100 writes = %d, want 800", got)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Minute, "the third call", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3 (until it holds)", n)
	}

	f := &fakeTB{}
	start := time.Now()
	WaitFor(f, 50*time.Millisecond, "the node to be running", func() bool { return false })
	if want := "timed out after 50ms waiting for the node to be running"; f.failed != want {
		t.Fatalf("failure = %q, want %q", f.failed, want)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("WaitFor gave up before its timeout")
	}
}

func TestLoggerWritesToTheTestLog(t *testing.T) {
	f := &fakeTB{}
	log := Logger(f, slog.LevelInfo)
	log.Debug("hidden")
	log.Info("started", "node", "n1")
	if len(f.logs) != 1 || !strings.Contains(f.logs[0], "msg=started node=n1") || strings.HasSuffix(f.logs[0], "\n") {
		t.Fatalf("logged %q, want one line with msg=started node=n1 and no trailing newline", f.logs)
	}
}

func TestClock(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewClock(t0)
	c.Advance(time.Hour)
	if got := c.Now(); !got.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Now after Advance(1h) = %v, want %v", got, t0.Add(time.Hour))
	}
	c.Set(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now after Set = %v, want %v", got, t0)
	}
}

func TestGoBuildReportsGoOutput(t *testing.T) {
	err := GoBuild(Build{Out: t.TempDir() + "/x", Pkgs: []string{"./no/such/package"}})
	if err == nil || !strings.Contains(err.Error(), "go build -o") || !strings.Contains(err.Error(), "no/such/package") {
		t.Fatalf("GoBuild of a missing package = %v, want an error naming the command and carrying go's output", err)
	}
}

func TestSHA256(t *testing.T) {
	if got, want := SHA256([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Fatalf(`SHA256("abc") = %s, want %s`, got, want)
	}
}

func TestMkfifo(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	err := Mkfifo(p, 0o600)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no FIFOs here")
	}
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm()&^0o600 != 0 {
		t.Fatalf("Mkfifo made mode %v, want a named pipe with at most 0600", fi.Mode())
	}
}
