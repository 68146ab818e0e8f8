package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/internal/testutil"
)

func TestEnsureLatestDownloadsVerifiesCaches(t *testing.T) {
	m := newTestMaster(t)
	m.publish("1.0.0", payload(3000, 1))
	want := m.publish("1.1.0", payload(3<<20+17, 2))
	dir := t.TempDir()
	var bar bytes.Buffer
	f := m.fetcher(t, dir, func(o *Options) { o.ProgressBar = &bar })

	e, err := f.Ensure(context.Background(), Latest)
	if err != nil {
		t.Fatalf("Ensure(latest): %v", err)
	}
	if e.Version != "1.1.0" || e.Checksum != want.info.Checksum || e.Size != want.info.SizeBytes {
		t.Errorf("Ensure(latest) = %+v, want 1.1.0 %s", e, want.info.Checksum)
	}
	if wantPath := filepath.Join(dir, "storage-server", "1.1.0", "storage-server"+exe()); e.Path != wantPath {
		t.Errorf("path = %s, want %s", e.Path, wantPath)
	}
	got, err := os.ReadFile(e.Path)
	if err != nil || !bytes.Equal(got, want.data) {
		t.Fatalf("cached file differs from the published binary (err %v)", err)
	}
	if runtime.GOOS != "windows" {
		if st, _ := os.Stat(e.Path); st.Mode().Perm() != 0o755 {
			t.Errorf("mode = %v, want 0755", st.Mode().Perm())
		}
	}
	var meta cache.Entry
	data, _ := os.ReadFile(filepath.Join(dir, "storage-server", "1.1.0", "meta.json"))
	if err := json.Unmarshal(data, &meta); err != nil || meta.Checksum != want.info.Checksum ||
		meta.Version != "1.1.0" || !strings.HasSuffix(meta.SourceURL, "/binaries/"+want.info.Path) || meta.FetchedAt.IsZero() {
		t.Errorf("meta.json = %s (%v)", data, err)
	}
	verified := false
	for _, r := range m.requests() {
		if r.Method == "POST" && r.Path == "/api/binaries/1.1.0/"+want.info.Platform+"/"+want.info.Arch+"/verify" {
			verified = true
		}
	}
	if !verified {
		t.Error("the master's verify endpoint was not asked")
	}
	if _, err := os.Stat(f.Cache().PartialPath("1.1.0")); !os.IsNotExist(err) {
		t.Errorf("partial left behind: %v", err)
	}
	if !strings.Contains(bar.String(), "100%") {
		t.Errorf("progress bar = %q, want a 100%% line", bar.String())
	}
	assertNothingUnverified(t, dir)

	// A second Ensure finds it in the cache: no download.
	if _, err := f.Ensure(context.Background(), Latest); err != nil {
		t.Fatal(err)
	}
	if n := len(m.downloads()); n != 1 {
		t.Errorf("downloads after a second Ensure = %d, want 1", n)
	}
}

func exe() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}

func TestMasterUnreachableUsesCache(t *testing.T) {
	m := newTestMaster(t)
	m.publish("1.0.0", payload(1000, 1))
	m.publish("1.2.0", payload(1200, 3))
	dir := t.TempDir()
	f := m.fetcher(t, dir)
	for _, v := range []string{"1.0.0", "1.2.0"} {
		if _, err := f.Ensure(context.Background(), v); err != nil {
			t.Fatalf("Ensure(%s): %v", v, err)
		}
	}
	m.srv.Close()

	e, err := f.Ensure(context.Background(), "1.0.0")
	if err != nil || e.Version != "1.0.0" {
		t.Errorf("Ensure(1.0.0) with the master down = %+v, %v; want the cached 1.0.0", e, err)
	}
	_, err = f.Ensure(context.Background(), Latest)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ensure(latest) with the master down = %v, want ErrUnavailable", err)
	}
	e, err = f.NewestVerified(context.Background())
	if err != nil || e.Version != "1.2.0" {
		t.Errorf("NewestVerified = %+v, %v; want 1.2.0", e, err)
	}
}

func TestBadInput(t *testing.T) {
	type check func(t *testing.T, m *testMaster, err error)
	wantErr := func(target error, substr string) check {
		return func(t *testing.T, m *testMaster, err error) {
			t.Helper()
			if !errors.Is(err, target) {
				t.Errorf("err = %v, want %v", err, target)
			}
			if substr != "" && (err == nil || !strings.Contains(err.Error(), substr)) {
				t.Errorf("err = %v, want it to mention %q", err, substr)
			}
		}
	}
	ok := func(t *testing.T, m *testMaster, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("err = %v, want success", err)
		}
	}
	data := payload(256<<10, 9)
	half := len(data) / 2

	tests := []struct {
		name  string
		setup func(m *testMaster, b *testBin)
		check check
		after func(t *testing.T, m *testMaster)
	}{
		{
			name: "wrong checksum in metadata",
			setup: func(m *testMaster, b *testBin) {
				b.info.Checksum = testutil.SHA256([]byte("something else"))
			},
			check: wantErr(ErrChecksum, "metadata says"),
			after: func(t *testing.T, m *testMaster) {
				if n := len(m.downloads()); n != 3 {
					t.Errorf("downloads = %d, want 3 (one per attempt)", n)
				}
			},
		},
		{
			name: "body differs from metadata",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					other := payload(len(b.data), 0x55)
					w.Header().Set("Content-Length", strconv.Itoa(len(other)))
					w.Write(other)
					return true
				}
			},
			check: wantErr(ErrChecksum, ""),
		},
		{
			name: "master's verify endpoint disagrees",
			setup: func(m *testMaster, b *testBin) {
				m.onVerify = func(w http.ResponseWriter, r *http.Request, b *testBin) bool {
					fmt.Fprintf(w, `{"valid": false, "expected_checksum": "%s"}`, testutil.SHA256([]byte("x")))
					return true
				}
			},
			check: wantErr(ErrChecksum, "verify endpoint"),
		},
		{
			name: "body shorter than Content-Length is resumed with Range",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					if n > 1 {
						return false
					}
					w.Header().Set("ETag", `"`+testutil.SHA256(b.data)+`"`)
					w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
					w.Write(b.data[:half])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler) // close the connection mid-body
				}
			},
			check: ok,
			after: func(t *testing.T, m *testMaster) {
				d := m.downloads()
				if len(d) != 2 || d[1].Range != fmt.Sprintf("bytes=%d-", half) || d[1].IfRange == "" {
					t.Errorf("downloads = %+v, want a second one with Range bytes=%d- and If-Range", d, half)
				}
			},
		},
		{
			name: "Content-Length longer than size_bytes",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					w.Header().Set("Content-Length", strconv.Itoa(len(b.data)+10))
					w.Write(append(append([]byte(nil), b.data...), make([]byte, 10)...))
					return true
				}
			},
			check: wantErr(ErrBadResponse, "Content-Length"),
		},
		{
			name: "chunked body longer than size_bytes",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					w.Write(b.data) // no Content-Length: chunked
					w.(http.Flusher).Flush()
					w.Write([]byte("trailing garbage"))
					return true
				}
			},
			check: wantErr(ErrBadResponse, "longer than size_bytes"),
		},
		{
			name: "bytes after Content-Length are ignored",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					conn, buf, err := w.(http.Hijacker).Hijack()
					if err != nil {
						return false
					}
					defer conn.Close()
					fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(b.data))
					buf.Write(b.data)
					buf.WriteString("EXTRA BYTES BEYOND CONTENT-LENGTH")
					buf.Flush()
					return true
				}
			},
			check: ok,
		},
		{
			name: "HTML error page with 200 for the download",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					w.Header().Set("Content-Type", "text/html; charset=utf-8")
					fmt.Fprint(w, "<html><body>Please log in</body></html>")
					return true
				}
			},
			check: wantErr(ErrBadResponse, "HTML page"),
		},
		{
			name: "HTML error page with 200 for the metadata",
			setup: func(m *testMaster, b *testBin) {
				m.onMeta = func(w http.ResponseWriter, r *http.Request, n int) bool {
					w.Header().Set("Content-Type", "text/html")
					fmt.Fprint(w, "<html>proxy error</html>")
					return true
				}
			},
			check: wantErr(ErrBadResponse, "HTML page"),
		},
		{
			name: "404 for the metadata is a clear error, not retried",
			setup: func(m *testMaster, b *testBin) {
				m.onMeta = func(w http.ResponseWriter, r *http.Request, n int) bool {
					http.Error(w, `{"error": "binary not found"}`, http.StatusNotFound)
					return true
				}
			},
			check: wantErr(ErrNotFound, "BINARIES_DIR"),
			after: func(t *testing.T, m *testMaster) {
				if m.metaCount != 1 {
					t.Errorf("metadata requests = %d, want 1", m.metaCount)
				}
			},
		},
		{
			name: "500 then success: the attempt is retried with backoff",
			setup: func(m *testMaster, b *testBin) {
				m.onMeta = func(w http.ResponseWriter, r *http.Request, n int) bool {
					if n <= 2 {
						http.Error(w, `{"error": "boom"}`, http.StatusInternalServerError)
						return true
					}
					return false
				}
			},
			check: ok,
			after: func(t *testing.T, m *testMaster) {
				if m.metaCount != 3 {
					t.Errorf("metadata requests = %d, want 3", m.metaCount)
				}
			},
		},
		{
			name: "500 forever gives up as unavailable",
			setup: func(m *testMaster, b *testBin) {
				m.onMeta = func(w http.ResponseWriter, r *http.Request, n int) bool {
					http.Error(w, `{"error": "boom"}`, http.StatusInternalServerError)
					return true
				}
			},
			check: wantErr(ErrUnavailable, "500"),
		},
		{
			name: "503 with a huge Retry-After is retried, clamped to the backoff cap",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					if n <= 2 {
						w.Header().Set("Retry-After", "3600")
						http.Error(w, "busy", http.StatusServiceUnavailable)
						return true
					}
					return false
				}
			},
			check: ok,
			after: func(t *testing.T, m *testMaster) {
				if n := len(m.downloads()); n != 3 {
					t.Errorf("downloads = %d, want 3", n)
				}
			},
		},
		{
			name: "404 for the download (file vanished) fails the attempt",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					http.Error(w, `{"error": "no such file"}`, http.StatusNotFound)
					return true
				}
			},
			check: wantErr(ErrNotFound, "404"),
		},
		{
			name: "stall mid-body: stall timeout, then resume with Range",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					if n > 1 {
						return false
					}
					w.Header().Set("ETag", `"`+testutil.SHA256(b.data)+`"`)
					w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
					w.Write(b.data[:half])
					w.(http.Flusher).Flush()
					<-r.Context().Done() // stall until the client gives up
					return true
				}
			},
			check: ok,
			after: func(t *testing.T, m *testMaster) {
				d := m.downloads()
				if len(d) != 2 || d[1].Range != fmt.Sprintf("bytes=%d-", half) {
					t.Errorf("downloads = %+v, want a resume with Range bytes=%d-", d, half)
				}
			},
		},
		{
			name: "200 answer to a Range request restarts from zero",
			setup: func(m *testMaster, b *testBin) {
				m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
					w.Header().Set("ETag", `"`+testutil.SHA256(b.data)+`"`)
					w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
					if n == 1 {
						w.Write(b.data[:half])
						w.(http.Flusher).Flush()
						panic(http.ErrAbortHandler)
					}
					w.Write(b.data) // ignores Range
					return true
				}
			},
			check: ok,
		},
		{
			name: "metadata for another platform is refused",
			setup: func(m *testMaster, b *testBin) {
				m.onMeta = func(w http.ResponseWriter, r *http.Request, n int) bool {
					info := b.info
					info.Platform = "plan9"
					json.NewEncoder(w).Encode(info)
					return true
				}
			},
			check: wantErr(ErrBadResponse, "plan9"),
		},
		{
			name: "metadata path escaping the download dir is refused",
			setup: func(m *testMaster, b *testBin) {
				b.info.Path = "../../etc/passwd"
			},
			check: wantErr(ErrBadResponse, "not a plain file name"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMaster(t)
			b := m.publish("2.0.0", data)
			tt.setup(m, b)
			dir := t.TempDir()
			f := m.fetcher(t, dir)
			e, err := f.Ensure(context.Background(), Latest)
			tt.check(t, m, err)
			if err == nil {
				got, rerr := os.ReadFile(e.Path)
				if rerr != nil || !bytes.Equal(got, data) {
					t.Errorf("cached file differs from the published binary (%v)", rerr)
				}
			} else if _, serr := os.Stat(f.Cache().Path("2.0.0")); serr == nil {
				t.Errorf("a file is at the final path after a failed fetch")
			}
			if tt.after != nil {
				tt.after(t, m)
			}
			assertNothingUnverified(t, dir)
		})
	}
}

func TestUnknownPlatform(t *testing.T) {
	for _, o := range []Options{
		{BaseURL: "http://localhost:7001", CacheDir: t.TempDir(), Platform: "plan9", Arch: "x86_64"},
		{BaseURL: "http://localhost:7001", CacheDir: t.TempDir(), Platform: "linux", Arch: "mips"},
	} {
		_, err := New(o)
		if !errors.Is(err, ErrUnsupportedPlatform) || !strings.Contains(err.Error(), "accepted") {
			t.Errorf("New(%s/%s) = %v, want ErrUnsupportedPlatform naming the accepted values", o.Platform, o.Arch, err)
		}
	}
}

func TestUnwritableCacheKeepsWhatWasCached(t *testing.T) {
	m := newTestMaster(t)
	old := m.publish("1.0.0", payload(5000, 1))
	dir := t.TempDir()
	f := m.fetcher(t, dir)
	if _, err := f.Ensure(context.Background(), Latest); err != nil {
		t.Fatal(err)
	}
	m.publish("2.0.0", payload(6000, 2))
	// The new version's directory cannot be created (a file is in the way):
	// works even as root, unlike a chmod.
	if err := os.WriteFile(filepath.Join(dir, "storage-server", "2.0.0"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := f.Ensure(context.Background(), Latest)
	if !errors.Is(err, ErrCacheDir) || !strings.Contains(err.Error(), "cache_dir") {
		t.Errorf("Ensure with an unwritable cache = %v, want ErrCacheDir with a hint", err)
	}
	if strings.Contains(err.Error(), "attempt 2") {
		t.Errorf("a local disk error was retried: %v", err)
	}
	e, err := f.VerifyCached(context.Background(), "1.0.0")
	if err != nil || e.Checksum != old.info.Checksum {
		t.Errorf("VerifyCached(1.0.0) after the failure = %+v, %v; want the old entry intact", e, err)
	}
}

func TestChangedCacheFileIsDetectedAndRefetched(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(path string) error
	}{
		{"overwritten", func(p string) error {
			data, _ := os.ReadFile(p)
			data[10] ^= 0xff
			return os.WriteFile(p, data, 0o755)
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 100) }},
		{"deleted metadata", func(p string) error { return os.Remove(filepath.Join(filepath.Dir(p), "meta.json")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMaster(t)
			b := m.publish("1.0.0", payload(70000, 4))
			dir := t.TempDir()
			f := m.fetcher(t, dir)
			e, err := f.Ensure(context.Background(), "1.0.0")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(e.Path); err != nil {
				t.Fatal(err)
			}
			if _, err := f.VerifyCached(context.Background(), "1.0.0"); !errors.Is(err, cache.ErrCorrupt) {
				t.Errorf("VerifyCached after damage = %v, want ErrCorrupt", err)
			}
			if _, err := os.Stat(e.Path); err == nil {
				t.Error("the corrupt file was left at the final path")
			}
			assertNothingUnverified(t, dir)
			e, err = f.Ensure(context.Background(), "1.0.0")
			if err != nil {
				t.Fatalf("Ensure after damage: %v", err)
			}
			if got, _ := os.ReadFile(e.Path); !bytes.Equal(got, b.data) {
				t.Error("re-fetched file differs")
			}
			if n := len(m.downloads()); n != 2 {
				t.Errorf("downloads = %d, want 2", n)
			}
		})
	}
}

func TestResumeAfterRestart(t *testing.T) {
	m := newTestMaster(t)
	b := m.publish("1.0.0", payload(200000, 5))
	const cut = 123456
	m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, n int) bool {
		if n > 1 {
			return false
		}
		w.Header().Set("ETag", `"`+testutil.SHA256(b.data)+`"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
		w.Write(b.data[:cut])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	}
	dir := t.TempDir()
	// The first agent is stopped in the middle of the body (as if killed).
	f1 := m.fetcher(t, dir, func(o *Options) { o.StallTimeout = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if st, err := os.Stat(f1.Cache().PartialPath("1.0.0")); err == nil && st.Size() >= cut {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := f1.Ensure(ctx, Latest); err == nil {
		t.Fatal("first fetch succeeded, want it interrupted")
	}
	cancel()
	st, err := os.Stat(f1.Cache().PartialPath("1.0.0"))
	if err != nil || st.Size() != cut {
		t.Fatalf("partial after interruption: %v, %v; want %d bytes", st, err, cut)
	}
	// A new Fetcher (a restarted agent) resumes from the partial's end.
	f2 := m.fetcher(t, dir)
	e, err := f2.Ensure(context.Background(), Latest)
	if err != nil {
		t.Fatalf("resumed fetch: %v", err)
	}
	if got, _ := os.ReadFile(e.Path); !bytes.Equal(got, b.data) {
		t.Error("resumed file differs")
	}
	d := m.downloads()
	if last := d[len(d)-1]; last.Range != fmt.Sprintf("bytes=%d-", cut) || last.IfRange != `"`+testutil.SHA256(b.data)+`"` {
		t.Errorf("resume request = %+v, want Range bytes=%d- with If-Range the ETag", last, cut)
	}
}

func TestPrune(t *testing.T) {
	m := newTestMaster(t)
	dir := t.TempDir()
	f := m.fetcher(t, dir)
	versions := []string{"1.0.0", "1.1.0", "1.2.0", "1.10.0", "2.0.0"}
	for i, v := range versions {
		m.publish(v, payload(100+i, byte(i)))
		if _, err := f.Ensure(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := f.Prune("1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(removed) != "[1.1.0]" {
		t.Errorf("Prune(inUse 1.0.0) removed %v, want [1.1.0]", removed)
	}
	left, _ := f.Cache().Versions()
	if fmt.Sprint(left) != "[2.0.0 1.10.0 1.2.0 1.0.0]" {
		t.Errorf("versions after Prune = %v", left)
	}
}

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "storage-server"+exe())
	if err := os.WriteFile(good, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := Local(context.Background(), good)
	if err != nil || e.Path != good || e.Checksum != testutil.SHA256([]byte("#!/bin/sh\n")) {
		t.Errorf("Local(good) = %+v, %v", e, err)
	}
	for name, path := range map[string]string{"missing": filepath.Join(dir, "nope"), "dir": dir} {
		if _, err := Local(context.Background(), path); !errors.Is(err, ErrBinaryPath) {
			t.Errorf("Local(%s) = %v, want ErrBinaryPath", name, err)
		}
	}
	if runtime.GOOS != "windows" {
		plain := filepath.Join(dir, "plain")
		os.WriteFile(plain, []byte("x"), 0o644)
		if _, err := Local(context.Background(), plain); !errors.Is(err, ErrBinaryPath) || !strings.Contains(err.Error(), "chmod +x") {
			t.Errorf("Local(non-executable) = %v, want ErrBinaryPath with chmod hint", err)
		}
	}
}

func TestBackoff(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for attempt := range 80 {
		ceil := min(time.Second<<min(attempt, 6), 60*time.Second)
		for range 50 {
			d := Backoff(time.Second, 60*time.Second, attempt, r)
			if d < 0 || d > ceil {
				t.Fatalf("Backoff(1s, 60s, %d) = %v, want within [0, %v]", attempt, d, ceil)
			}
		}
	}
	// Full jitter spreads: not all delays equal.
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[Backoff(time.Second, 60*time.Second, 3, r)] = true
	}
	if len(seen) < 10 {
		t.Errorf("Backoff is not jittered: %v", seen)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		h    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		d, ok := RetryAfter(tt.h, now)
		if d != tt.want || ok != tt.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tt.h, d, ok, tt.want, tt.ok)
		}
	}
	f := &Fetcher{opts: Options{Rand: rand.New(rand.NewPCG(1, 1))}}
	resp := &http.Response{Header: http.Header{"Retry-After": {"3600"}}}
	if d := f.retryDelay(time.Second, 60*time.Second, 0, resp, now); d != 60*time.Second {
		t.Errorf("Retry-After 3600 with a 60 s cap = %v, want 60s", d)
	}
	resp.Header.Set("Retry-After", "5")
	if d := f.retryDelay(time.Second, 60*time.Second, 0, resp, now); d != 5*time.Second {
		t.Errorf("Retry-After 5 = %v, want 5s", d)
	}
}

func TestCheckRetry(t *testing.T) {
	for code, want := range map[int]bool{200: false, 400: false, 404: false, 500: false, 501: false,
		429: true, 502: true, 503: true, 504: true} {
		got, _ := checkRetry(context.Background(), &http.Response{StatusCode: code}, nil)
		if got != want {
			t.Errorf("checkRetry(%d) = %v, want %v", code, got, want)
		}
	}
	if got, _ := checkRetry(context.Background(), nil, errors.New("connection refused")); !got {
		t.Error("checkRetry(connection error) = false, want true")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got, _ := checkRetry(ctx, nil, errors.New("x")); got {
		t.Error("checkRetry after cancel = true, want false")
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		s            string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-0/1", 0, 1, true},
		{"bytes 100-150/200", 0, 0, false},
		{"bytes */200", 0, 0, false},
		{"bytes 5-4/200", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		s, tot, ok := parseContentRange(tt.s)
		if s != tt.start || tot != tt.total || ok != tt.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", tt.s, s, tot, ok, tt.start, tt.total, tt.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 100-199/200", "bytes 0-0/1", "bytes -1--2/3", "bytes 9223372036854775806-9223372036854775807/9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < 0 || start >= total) {
			t.Fatalf("parseContentRange(%q) = %d, %d accepted", s, start, total)
		}
	})
}
