package fetch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testutil"
)

// testMaster is a real HTTP server implementing the design document's binary
// API (metadata, latest, verify, download with http.ServeContent, ETag). Tests
// make it misbehave through the hook fields.
type testMaster struct {
	t   testing.TB
	srv *httptest.Server

	mu   sync.Mutex
	bins map[string]*testBin // by version
	sigs map[string][]byte   // release signatures by file name ({path}.minisig)
	reqs []testReq

	// Hooks: return true when the request was answered.
	onMeta     func(w http.ResponseWriter, r *http.Request, n int) bool
	onDownload func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool
	onVerify   func(w http.ResponseWriter, r *http.Request, b *testBin) bool
	metaCount  int
	dlCount    int
}

type testBin struct {
	info httpapi.BinaryInfo
	data []byte
}

type testReq struct {
	Method, Path, Range, IfRange string
}

func newTestMaster(t testing.TB) *testMaster {
	t.Helper()
	m := &testMaster{t: t, bins: map[string]*testBin{}, sigs: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/binaries/{version}/{platform}/{arch}", m.meta)
	mux.HandleFunc("POST /api/binaries/{version}/{platform}/{arch}/verify", m.verify)
	mux.HandleFunc("GET /binaries/{name}", m.download)
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.reqs = append(m.reqs, testReq{r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("If-Range")})
		m.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

// publish adds a binary for this machine's platform and returns it.
func (m *testMaster) publish(version string, data []byte) *testBin {
	p, a, err := platform.Current()
	if err != nil {
		m.t.Fatal(err)
	}
	b := &testBin{data: data, info: httpapi.BinaryInfo{
		Version: version, Platform: p, Arch: a, Checksum: testutil.SHA256(data), SizeBytes: int64(len(data)),
		Path: fmt.Sprintf("storage-server-%s-%s-%s", version, p, a), UploadedAt: time.Now().Unix(),
	}}
	m.mu.Lock()
	m.bins[version] = b
	m.mu.Unlock()
	return b
}

func (m *testMaster) requests() []testReq {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]testReq(nil), m.reqs...)
}

func (m *testMaster) downloads() []testReq {
	var out []testReq
	for _, r := range m.requests() {
		if strings.HasPrefix(r.Path, "/binaries/") {
			out = append(out, r)
		}
	}
	return out
}

func (m *testMaster) find(version, p, a string) *testBin {
	m.mu.Lock()
	defer m.mu.Unlock()
	if version == "latest" {
		var best *testBin
		for _, b := range m.bins {
			if best == nil || compareVersions(b.info.Version, best.info.Version) > 0 {
				best = b
			}
		}
		version = ""
		if best != nil {
			version = best.info.Version
		}
	}
	b := m.bins[version]
	if b == nil || b.info.Platform != p || b.info.Arch != a {
		return nil
	}
	return b
}

func (m *testMaster) meta(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.metaCount++
	n := m.metaCount
	m.mu.Unlock()
	if m.onMeta != nil && m.onMeta(w, r, n) {
		return
	}
	b := m.find(r.PathValue("version"), r.PathValue("platform"), r.PathValue("arch"))
	if b == nil {
		httpjson.WriteError(w, http.StatusNotFound, "binary not found")
		return
	}
	httpjson.Write(w, http.StatusOK, b.info)
}

func (m *testMaster) verify(w http.ResponseWriter, r *http.Request) {
	b := m.find(r.PathValue("version"), r.PathValue("platform"), r.PathValue("arch"))
	if b == nil {
		httpjson.WriteError(w, http.StatusNotFound, "binary not found")
		return
	}
	if m.onVerify != nil && m.onVerify(w, r, b) {
		return
	}
	var req struct {
		Checksum string `json:"checksum"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, "invalid JSON")
		return
	}
	want := testutil.SHA256(b.data) // the master's truth is the file it serves
	httpjson.Write(w, http.StatusOK, map[string]any{"valid": req.Checksum == want, "expected_checksum": want})
}

func (m *testMaster) download(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	m.mu.Lock()
	var b *testBin
	for _, c := range m.bins {
		if c.info.Path == name {
			b = c
		}
	}
	m.dlCount++
	n := m.dlCount
	sig, signed := m.sigs[name]
	m.mu.Unlock()
	if signed {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(sig)
		return
	}
	if b == nil {
		httpjson.WriteError(w, http.StatusNotFound, "no such file")
		return
	}
	if m.onDownload != nil && m.onDownload(w, r, b, n) {
		return
	}
	serve(w, r, b)
}

// serve answers like a correct master: ETag, Range support, octet-stream.
func serve(w http.ResponseWriter, r *http.Request, b *testBin) {
	w.Header().Set("ETag", `"`+testutil.SHA256(b.data)+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, b.info.Path, time.Unix(1729218000, 0), bytes.NewReader(b.data))
}

// compareVersions orders the simple x.y.z versions the tests use.
func compareVersions(a, b string) int {
	var x, y [3]int
	fmt.Sscanf(a, "%d.%d.%d", &x[0], &x[1], &x[2])
	fmt.Sscanf(b, "%d.%d.%d", &y[0], &y[1], &y[2])
	for i := range x {
		if x[i] != y[i] {
			if x[i] < y[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// fastOptions are ms-scale timings so the bad-input tests finish quickly;
// they are generous where a loaded machine could otherwise flake.
func (m *testMaster) options(t *testing.T, cacheDir string) Options {
	return Options{
		BaseURL:               m.srv.URL,
		CacheDir:              cacheDir,
		Attempts:              3,
		Retries:               3,
		BackoffMin:            time.Millisecond,
		BackoffMax:            20 * time.Millisecond,
		ConnectTimeout:        5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		StallTimeout:          300 * time.Millisecond,
		Timeout:               60 * time.Second,
		Logger:                testutil.Logger(t, slog.LevelDebug),
	}
}

func (m *testMaster) fetcher(t *testing.T, cacheDir string, edit ...func(*Options)) *Fetcher {
	t.Helper()
	o := m.options(t, cacheDir)
	for _, e := range edit {
		e(&o)
	}
	f, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

// assertNothingUnverified walks the cache: every executable file, and every
// file at an executable's final path, must be described by a meta.json whose
// checksum matches its content; partial files are never executable.
func assertNothingUnverified(t *testing.T, cacheDir string) {
	t.Helper()
	_ = filepath.WalkDir(cacheDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		base := filepath.Base(path)
		final := base == "storage-server" || base == "storage-server.exe"
		if strings.HasSuffix(base, ".partial") && info.Mode().Perm()&0o111 != 0 {
			t.Errorf("partial download %s is executable (%v)", path, info.Mode())
		}
		if !final && info.Mode().Perm()&0o111 != 0 {
			t.Errorf("unexpected executable %s", path)
		}
		if final {
			data, _ := os.ReadFile(path)
			metaData, err := os.ReadFile(filepath.Join(filepath.Dir(path), "meta.json"))
			if err != nil {
				t.Errorf("%s is at the final path without metadata", path)
				return nil
			}
			var meta struct {
				Checksum string `json:"checksum"`
			}
			if json.Unmarshal(metaData, &meta) != nil || meta.Checksum != testutil.SHA256(data) {
				t.Errorf("%s at the final path does not match its recorded checksum", path)
			}
		}
		return nil
	})
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}
