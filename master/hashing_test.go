package master

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// Issue 9 item 11: the start-up lines say how many binaries are still being
// hashed (serving does not wait for them), and keep the design document's
// "Auto-registered" line once they are; a restart with the checksum cache
// registers at once.
func TestStartupLinesCountHashing(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", make([]byte, 1<<20))
	writeBinary(t, dir, "storage-server-1.1.0-linux-x86_64", make([]byte, 1<<20+1))
	for i, want := range [][]string{
		{"⏳ Hashing 2 binaries in the background (0 registered from the checksum cache)", "📦 Auto-registered 2 binaries"},
		{"📦 Auto-registered 2 binaries"},
	} {
		var buf testutil.SyncBuffer
		startMaster(t, dir, data, func(o *Options) { o.Console = &buf }).stop()
		out := buf.String()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("start %d: console lacks %q:\n%s", i+1, w, out)
			}
		}
		if i == 1 && strings.Contains(out, "⏳") {
			t.Errorf("start %d (all cached): console says it is hashing:\n%s", i+1, out)
		}
	}
}

// Issue 9 item 12: what net/http answers before any handler runs (headers
// over MaxHeaderBytes, a malformed request) is JSON like every other error.
func TestServerOwnErrorsAreJSON(t *testing.T) {
	m := startMaster(t, t.TempDir(), t.TempDir(), nil)
	for _, req := range []string{
		"GET /api/binaries HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n",
		"GET /api/binaries HTTP/1.1\r\n\r\n",
		"BOGUS\r\n\r\n",
	} {
		c, err := net.Dial("tcp", strings.TrimPrefix(m.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		a := answer{status: resp.StatusCode, header: resp.Header, body: body}
		if a.status < 400 || a.status >= 500 {
			t.Errorf("request %.40q... = %d, want 4xx", req, a.status)
		}
		a.errorBody(t)
	}
}

// Issue 11 item 10: binaries written just before start-up are registered
// once they settle, after the start-up count: the start-up line says how
// many are settling instead of leaving them out silently.
func TestStartupLinesCountSettling(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", []byte("old one"))
	writeBinary(t, dir, "storage-server-1.1.0-linux-x86_64", []byte("old two"))
	for _, n := range []string{"storage-server-1.2.0-linux-x86_64", "sutra-agent-1.0.0-linux-x86_64"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("just written"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A settle time longer than the test: the fresh files stay settling.
	settle := func(buf *testutil.SyncBuffer) func(*Options) {
		return func(o *Options) { o.Console, o.Settle = buf, time.Hour }
	}
	for i, want := range []string{
		"⏳ Hashing 2 binaries in the background (0 registered from the checksum cache, 2 settling); each is served once hashed",
		"📦 Auto-registered 2 binaries, 2 settling (written just before start-up; each is registered once it stops changing)",
	} {
		var buf testutil.SyncBuffer
		startMaster(t, dir, data, settle(&buf)).stop()
		if out := buf.String(); !strings.Contains(out, want+"\n") {
			t.Errorf("start %d: console lacks %q:\n%s", i+1, want, out)
		}
	}
}
