package binapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/httpserver"
)

func newServerWith(t testing.TB, opts Options) (*httptest.Server, *API) {
	t.Helper()
	api, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(httpserver.Handler(mux, nil))
	t.Cleanup(srv.Close)
	return srv, api
}

// Issue 9 item 2: clients that send a GET and never read hold their download
// slot only until the stall timeout, then the slot serves someone else.
func TestStalledDownloadsReleaseTheirSlots(t *testing.T) {
	name := "storage-server-1.0.0-linux-x86_64"
	big := make([]byte, 64<<20) // far more than socket buffers hold
	c := newCatalog(t, map[string][]byte{name: big})
	const stall = 2 * time.Second
	srv, api := newServerWith(t, Options{Catalog: c, MaxConcurrentDownloads: 2, StallTimeout: stall})
	addr := strings.TrimPrefix(srv.URL, "http://")

	for range 2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(conn, "GET /binaries/%s HTTP/1.1\r\nHost: x\r\n\r\n", name)
		// and never read
	}
	// Both slots taken by the two stalled clients. Wait on the server's own
	// count rather than probing with GETs: a probe that won a slot first
	// would make one stalled client's request answer 503 and leave.
	deadline := time.Now().Add(10 * time.Second)
	for api.ActiveDownloads() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the two non-reading clients never filled the 2 slots (%d in use)", api.ActiveDownloads())
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Get(srv.URL + "/binaries/" + name)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("with both slots held, a third client got %d, want 503", resp.StatusCode)
	}
	start := time.Now()
	limit := stall + 10*time.Second
	for {
		resp, err := http.Get(srv.URL + "/binaries/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != int64(len(big)) {
				t.Fatalf("third client got %d bytes, %v; want %d", n, err, len(big))
			}
			t.Logf("third client served %s after the slots filled", time.Since(start).Round(time.Millisecond))
			return
		}
		resp.Body.Close()
		if time.Since(start) > limit {
			t.Fatalf("third client still gets %d after %s; stalled downloads keep their slots", resp.StatusCode, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Issue 9 item 3: a FIFO renamed over a published binary answers a JSON error
// at once and releases the download slot, instead of blocking in open().
func TestFIFOOverBinaryIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no FIFOs")
	}
	name := "storage-server-1.0.0-linux-x86_64"
	c := newCatalog(t, map[string][]byte{name: []byte("binary")})
	api, err := New(Options{Catalog: c, MaxConcurrentDownloads: 1})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(httpserver.Handler(mux, nil))
	defer srv.Close()
	fifo := filepath.Join(c.Dir(), "fifo.tmp")
	if err := testutil.Mkfifo(fifo, 0o644); err != nil {
		t.Skip(err)
	}
	if err := os.Rename(fifo, filepath.Join(c.Dir(), name)); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 3 {
		resp, err := client.Get(srv.URL + "/binaries/" + name)
		if err != nil {
			t.Fatalf("GET %d: %v (blocked on the FIFO?)", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 600 || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %d of a FIFO = %d %q %s, want a JSON error", i, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	if n := api.ActiveDownloads(); n != 0 {
		t.Errorf("ActiveDownloads() = %d after the answers, want 0", n)
	}
}

// Issue 9 item 12: a suffix range of zero bytes is unsatisfiable: 416 with
// Content-Range "bytes */size", as JSON; other ranges next to it still work.
func TestZeroSuffixRange(t *testing.T) {
	name := "storage-server-1.0.0-linux-x86_64"
	data := []byte("0123456789")
	c := newCatalog(t, map[string][]byte{name: data})
	srv := newServer(t, c, nil)
	for _, tc := range []struct {
		rng, ifRange string
		status       int
		body         string
	}{
		{"bytes=-0", "", 416, ""},
		{"bytes=-000", "", 416, ""},
		{"bytes= -0 , -0", "", 416, ""},
		{"bytes=0-1,-0", "", 206, "01"},
		{"bytes=-2", "", 206, "89"},
		{"bytes=-0", `"not-the-etag"`, 200, "0123456789"},
		{"bytes=20-", "", 416, ""},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/binaries/"+name, nil)
		req.Header.Set("Range", tc.rng)
		if tc.ifRange != "" {
			req.Header.Set("If-Range", tc.ifRange)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("Range %q = %d (Content-Range %q), want %d", tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"), tc.status)
			continue
		}
		switch tc.status {
		case 416:
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", len(data)) {
				t.Errorf("Range %q: Content-Range %q, want bytes */%d", tc.rng, cr, len(data))
			}
			var e map[string]string
			if json.Unmarshal(body, &e) != nil || e["error"] == "" {
				t.Errorf("Range %q: body %q, want JSON error", tc.rng, body)
			}
		default:
			if string(body) != tc.body {
				t.Errorf("Range %q: body %q, want %q", tc.rng, body, tc.body)
			}
		}
	}
}

// Issue 9 item 11: while the master hashes at start-up, what is not hashed
// yet answers 503 Retry-After (never an older "latest"), and is served once
// hashed.
func TestStartupHashingAnswersRetry(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	names := map[string]string{"2.0.0": "storage-server-2.0.0-linux-x86_64", "3.0.0": "storage-server-3.0.0-linux-x86_64"}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(n), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	release := make(chan struct{})
	first := make(chan string, 1)
	var held atomic.Bool
	c, err := catalog.Open(context.Background(), catalog.Options{Dir: dir, NoWatch: true, Rescan: -1,
		HashWorkers: 1, HashInBackground: true,
		OnEvent: func(e catalog.Event) {
			if e.Kind == catalog.Registered && held.CompareAndSwap(false, true) {
				first <- e.Binary.Version
				<-release
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	srv := newServer(t, c, nil)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	got := <-first
	waiting := map[string]string{"2.0.0": "3.0.0", "3.0.0": "2.0.0"}[got]
	for _, path := range []string{
		"/binaries/" + names[waiting],
		"/api/binaries/latest/linux/x86_64",
		"/api/binaries/" + waiting + "/linux/x86_64",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s while %s is being hashed = %d %s, want 503 with Retry-After", path, waiting, resp.StatusCode, body)
		}
	}
	unblock()
	if err := c.WaitHashed(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL + "/api/binaries/latest/linux/x86_64")
	if err != nil {
		t.Fatal(err)
	}
	var info httpapi.BinaryInfo
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if resp.StatusCode != 200 || info.Version != "3.0.0" {
		t.Errorf("latest after hashing = %d %+v, want 200 3.0.0", resp.StatusCode, info)
	}
}
