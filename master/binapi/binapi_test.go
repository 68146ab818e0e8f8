package binapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/httpserver"
)

func newCatalog(t testing.TB, files map[string][]byte) *catalog.Catalog {
	t.Helper()
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	c, err := catalog.Open(context.Background(), catalog.Options{Dir: dir, NoWatch: true, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newServer(t testing.TB, c *catalog.Catalog, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	api, err := New(Options{Catalog: c})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	var h http.Handler = httpserver.Handler(mux, nil)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// readFromSpy records what reaches the ResponseWriter's ReadFrom, then
// passes it on to the real one (which hands *os.File to sendfile).
type readFromSpy struct {
	http.ResponseWriter
	mu         *sync.Mutex
	sources    *[]string
	wroteBytes *int
}

func (s readFromSpy) ReadFrom(src io.Reader) (int64, error) {
	desc := fmt.Sprintf("%T", src)
	if lr, ok := src.(*io.LimitedReader); ok {
		desc = fmt.Sprintf("%T(%T)", lr, lr.R)
	}
	s.mu.Lock()
	*s.sources = append(*s.sources, desc)
	s.mu.Unlock()
	return s.ResponseWriter.(io.ReaderFrom).ReadFrom(src)
}

func (s readFromSpy) Write(p []byte) (int, error) {
	s.mu.Lock()
	*s.wroteBytes += len(p)
	s.mu.Unlock()
	return s.ResponseWriter.Write(p)
}

// TestDownloadIsZeroCopy proves the *os.File reaches the ResponseWriter's
// ReadFrom unwrapped (io.CopyN's LimitedReader is what net.TCPConn.ReadFrom
// unwraps for sendfile), for a full download and for a range.
func TestDownloadIsZeroCopy(t *testing.T) {
	name := "storage-server-1.0.0-linux-x86_64"
	data := []byte(strings.Repeat("zero-copy ", 100_000))
	c := newCatalog(t, map[string][]byte{name: data})
	var (
		mu      sync.Mutex
		sources []string
		wrote   int
	)
	srv := newServer(t, c, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(readFromSpy{w, &mu, &sources, &wrote}, r)
		})
	})
	for _, rng := range []string{"", "bytes=1000-499999"} {
		mu.Lock()
		sources, wrote = nil, 0
		mu.Unlock()
		req, _ := http.NewRequest("GET", srv.URL+"/binaries/"+name, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 || len(body) == 0 {
			t.Fatalf("GET (Range %q) = %d, %d bytes", rng, resp.StatusCode, len(body))
		}
		mu.Lock()
		if len(sources) != 1 || sources[0] != "*io.LimitedReader(*os.File)" {
			t.Errorf("Range %q: ReadFrom received %v, want exactly one *io.LimitedReader(*os.File)", rng, sources)
		}
		if wrote != 0 {
			t.Errorf("Range %q: %d body bytes went through Write instead of ReadFrom", rng, wrote)
		}
		mu.Unlock()
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Options{MaxConcurrentDownloads: -1, RetryAfter: -1})
	for _, want := range []string{"Catalog", "MaxConcurrentDownloads", "RetryAfter"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() = %v, want it to name %s", err, want)
		}
	}
}

func BenchmarkServe(b *testing.B) {
	name := "storage-server-1.0.0-linux-x86_64"
	data := make([]byte, 16<<20)
	c := newCatalog(b, map[string][]byte{name: data})
	srv := newServer(b, c, nil)
	url := srv.URL + "/binaries/" + name
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != int64(len(data)) {
			b.Fatalf("got %d bytes", n)
		}
	}
}
