package catalog

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// testOptions returns fast watcher timings for tests; they only shorten
// waits, nothing asserts on them.
func testOptions(dir, data string) Options {
	return Options{Dir: dir, DataDir: data, Debounce: 20 * time.Millisecond, Settle: 150 * time.Millisecond, Rescan: -1}
}

type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) add(e Event) { r.mu.Lock(); r.evs = append(r.evs, e); r.mu.Unlock() }
func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}
func (r *recorder) skipped(name string) (string, bool) {
	for _, e := range r.all() {
		if e.Kind == Skipped && e.Filename == name {
			return e.Reason, true
		}
	}
	return "", false
}

// writeOld writes a file whose mtime is in the past, as a binary long in place.
func writeOld(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	return p
}

func open(t *testing.T, o Options) *Catalog {
	t.Helper()
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestScanRegistersValidAndSkipsTheRest(t *testing.T) {
	dir := t.TempDir()
	a := []byte("linux build 1.0.0")
	writeOld(t, dir, "storage-server-1.0.0-linux-x86_64", a)
	writeOld(t, dir, "storage-server-1.0.0-windows-x86_64.exe", []byte("win"))
	writeOld(t, dir, "sutra-agent-0.2.0-darwin-aarch64", []byte("agent"))
	// Skipped with a reason.
	writeOld(t, dir, "storage-server-v1.0.0-linux-x86_64", []byte("x"))
	writeOld(t, dir, "storage_server-1.0.0-linux-x86_64", []byte("x"))
	writeOld(t, dir, "storage-server-linux-x86_64", []byte("x"))
	writeOld(t, dir, "storage-server-1.0.0-linux-amd64", []byte("x"))
	writeOld(t, dir, "storage-server-2.0.0-linux-x86_64", nil) // empty
	if err := os.Mkdir(filepath.Join(dir, "storage-server-3.0.0-linux-x86_64"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Ignored silently.
	writeOld(t, dir, ".storage-server-1.0.0-linux-aarch64", []byte("x"))
	writeOld(t, dir, "storage-server-1.0.0-linux-arm.partial", []byte("x"))
	writeOld(t, dir, "storage-server-1.0.0-linux-x86.tmp", []byte("x"))
	outside := writeOld(t, t.TempDir(), "secret", []byte("secret"))
	if runtime.GOOS != "windows" {
		if err := os.Symlink(outside, filepath.Join(dir, "storage-server-4.0.0-linux-x86_64")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("storage-server-1.0.0-linux-x86_64", filepath.Join(dir, "storage-server-1.0.1-linux-x86_64")); err != nil {
			t.Fatal(err)
		}
	}

	var rec recorder
	o := testOptions(dir, t.TempDir())
	o.OnEvent = rec.add
	c := open(t, o)

	b, ok := c.Lookup("storage-server", "1.0.0", "linux", "x86_64")
	if !ok {
		t.Fatalf("Lookup(storage-server 1.0.0 linux x86_64) not found; events %+v", rec.all())
	}
	if b.SHA256 != testutil.SHA256(a) || b.Size != int64(len(a)) || b.Filename != "storage-server-1.0.0-linux-x86_64" {
		t.Errorf("Lookup = %+v, want sha %s size %d", b, testutil.SHA256(a), len(a))
	}
	if b.UploadedAt.IsZero() {
		t.Error("UploadedAt is zero")
	}
	if _, ok := c.Lookup("storage-server", "1.0.0", "windows", "x86_64"); !ok {
		t.Error("windows .exe binary not registered")
	}
	if _, ok := c.Lookup("sutra-agent", "0.2.0", "darwin", "aarch64"); !ok {
		t.Error("sutra-agent binary not registered")
	}
	for name, reason := range map[string]string{
		"storage-server-v1.0.0-linux-x86_64": `leading "v"`,
		"storage_server-1.0.0-linux-x86_64":  "underscore",
		"storage-server-linux-x86_64":        "missing version",
		"storage-server-1.0.0-linux-amd64":   "unknown arch",
		"storage-server-2.0.0-linux-x86_64":  "empty file",
		"storage-server-3.0.0-linux-x86_64":  "not a regular file",
	} {
		got, ok := rec.skipped(name)
		if !ok {
			t.Errorf("%s: no Skipped event", name)
		} else if !strings.Contains(got, reason) {
			t.Errorf("%s skipped because %q, want %q", name, got, reason)
		}
	}
	if runtime.GOOS != "windows" {
		if got, _ := rec.skipped("storage-server-4.0.0-linux-x86_64"); !strings.Contains(got, "outside BINARIES_DIR") {
			t.Errorf("escaping symlink skipped because %q, want outside BINARIES_DIR", got)
		}
		if _, ok := c.Lookup("storage-server", "1.0.1", "linux", "x86_64"); !ok {
			t.Error("symlink inside the dir not registered")
		}
	}
	for _, e := range rec.all() {
		if e.Kind == Skipped && (e.Filename[0] == '.' || filepath.Ext(e.Filename) == ".partial" || filepath.Ext(e.Filename) == ".tmp") {
			t.Errorf("%s should be ignored silently, got %+v", e.Filename, e)
		}
	}
	if got := len(c.List("")); got != 3+boolInt(runtime.GOOS != "windows") {
		t.Errorf("List() has %d binaries: %+v", got, c.List(""))
	}
}

func TestOrderingAndLatest(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{
		"storage-server-1.9.0-linux-x86_64", "storage-server-1.10.0-linux-x86_64", "storage-server-2.0.0-rc.1-linux-x86_64",
		"storage-server-1.2.0-darwin-aarch64", "storage-server-3.0.0-beta.1-linux-arm", "storage-server-3.0.0-beta.2-linux-arm",
		"sutra-agent-9.0.0-linux-x86_64",
	} {
		writeOld(t, dir, n, []byte(n))
	}
	c := open(t, testOptions(dir, ""))
	var got []string
	for _, b := range c.List("storage-server") {
		got = append(got, b.Platform+"/"+b.Arch+"/"+b.Version)
	}
	want := []string{"darwin/aarch64/1.2.0", "linux/arm/3.0.0-beta.2", "linux/arm/3.0.0-beta.1",
		"linux/x86_64/2.0.0-rc.1", "linux/x86_64/1.10.0", "linux/x86_64/1.9.0"}
	if !slices.Equal(got, want) {
		t.Errorf("List(storage-server) = %v, want %v", got, want)
	}
	for _, tt := range []struct{ plat, arch, want string }{
		{"linux", "x86_64", "1.10.0"}, // stable beats a newer pre-release
		{"linux", "arm", "3.0.0-beta.2"},
		{"darwin", "aarch64", "1.2.0"},
		{"windows", "x86_64", ""},
	} {
		b, ok := c.Latest("storage-server", tt.plat, tt.arch)
		if (tt.want == "") == ok || ok && b.Version != tt.want {
			t.Errorf("Latest(%s, %s) = %q (found %v), want %q", tt.plat, tt.arch, b.Version, ok, tt.want)
		}
	}
	if _, ok := c.Lookup("storage-server", "2.0.0-rc.1", "linux", "x86_64"); !ok {
		t.Error("pre-release not found by exact version")
	}
	if b, _ := c.Latest("sutra-agent", "linux", "x86_64"); b.Version != "9.0.0" {
		t.Errorf("Latest(sutra-agent) = %q, want 9.0.0", b.Version)
	}
}

func TestDuplicateExe(t *testing.T) {
	dir := t.TempDir()
	writeOld(t, dir, "storage-server-1.0.0-windows-x86_64", []byte("a"))
	writeOld(t, dir, "storage-server-1.0.0-windows-x86_64.exe", []byte("b"))
	var rec recorder
	o := testOptions(dir, "")
	o.OnEvent = rec.add
	c := open(t, o)
	b, _ := c.Lookup("storage-server", "1.0.0", "windows", "x86_64")
	if b.Filename != "storage-server-1.0.0-windows-x86_64" {
		t.Errorf("published %q, want the name that sorts first", b.Filename)
	}
	if r, _ := rec.skipped("storage-server-1.0.0-windows-x86_64.exe"); !strings.Contains(r, "duplicate") {
		t.Errorf("the .exe twin was skipped because %q, want duplicate", r)
	}
	// Removing the winner publishes the twin.
	os.Remove(filepath.Join(dir, "storage-server-1.0.0-windows-x86_64"))
	testutil.WaitFor(t, 30*time.Second, "the .exe twin to be published", func() bool {
		b, ok := c.Lookup("storage-server", "1.0.0", "windows", "x86_64")
		return ok && b.Filename == "storage-server-1.0.0-windows-x86_64.exe"
	})
}

func TestRestartUsesCacheAndKeepsUploadedAt(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	writeOld(t, dir, "storage-server-1.0.0-linux-x86_64", []byte("one"))
	p2 := writeOld(t, dir, "storage-server-2.0.0-linux-x86_64", []byte("two"))
	c1, err := Open(context.Background(), testOptions(dir, data))
	if err != nil {
		t.Fatal(err)
	}
	if s := c1.Stats(); s.HashedFiles != 2 || s.HashedBytes != 6 {
		t.Errorf("cold start Stats = %+v, want 2 files / 6 bytes hashed", s)
	}
	first, _ := c1.Lookup("storage-server", "1.0.0", "linux", "x86_64")
	c1.Close()
	// uploaded_at is whole seconds: make sure a new registration would differ.
	time.Sleep(1100 * time.Millisecond)

	c2 := open(t, testOptions(dir, data))
	if s := c2.Stats(); s.HashedFiles != 0 || s.CacheHits != 2 {
		t.Errorf("warm start Stats = %+v, want nothing hashed, 2 cache hits", s)
	}
	again, _ := c2.Lookup("storage-server", "1.0.0", "linux", "x86_64")
	if !again.UploadedAt.Equal(first.UploadedAt) || again.SHA256 != first.SHA256 {
		t.Errorf("after restart %v %s, want %v %s", again.UploadedAt, again.SHA256, first.UploadedAt, first.SHA256)
	}
	c2.Close()

	// A changed file is hashed again, and only that one.
	if err := os.WriteFile(p2, []byte("TWO!"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	os.Chtimes(p2, old, old)
	c3 := open(t, testOptions(dir, data))
	if s := c3.Stats(); s.HashedFiles != 1 || s.HashedBytes != 4 {
		t.Errorf("after a change Stats = %+v, want 1 file / 4 bytes hashed", s)
	}
	if b, _ := c3.Lookup("storage-server", "2.0.0", "linux", "x86_64"); b.SHA256 != testutil.SHA256([]byte("TWO!")) {
		t.Errorf("changed file has checksum %s, want the new content's", b.SHA256)
	}
}

func TestCorruptCacheIsRebuilt(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	writeOld(t, dir, "storage-server-1.0.0-linux-x86_64", []byte("one"))
	os.WriteFile(filepath.Join(data, CacheFile), []byte("{not json"), 0o644)
	c := open(t, testOptions(dir, data))
	if _, ok := c.Lookup("storage-server", "1.0.0", "linux", "x86_64"); !ok {
		t.Fatal("binary not registered with a corrupt cache")
	}
	c.Close()
	c2 := open(t, testOptions(dir, data))
	if s := c2.Stats(); s.HashedFiles != 0 {
		t.Errorf("the cache was not rebuilt: Stats = %+v", s)
	}
}

func TestWatchCopyInSlowly(t *testing.T) {
	dir := t.TempDir()
	c := open(t, testOptions(dir, t.TempDir()))
	name := "storage-server-1.1.0-linux-x86_64"
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range 5 {
		chunk := make([]byte, 64<<10)
		for j := range chunk {
			chunk[j] = byte(i + j)
		}
		f.Write(chunk)
		all = append(all, chunk...)
		time.Sleep(50 * time.Millisecond) // shorter than Settle: must not be registered half-written
	}
	f.Close()
	testutil.WaitFor(t, 30*time.Second, name+" to appear", func() bool { _, ok := c.ByFilename(name); return ok })
	b, _ := c.ByFilename(name)
	if b.SHA256 != testutil.SHA256(all) || b.Size != int64(len(all)) {
		t.Fatalf("registered with size %d sha %s, want the final content (%d bytes, %s)", b.Size, b.SHA256, len(all), testutil.SHA256(all))
	}

	// Replaced by rename: re-registered with the new checksum.
	tmp := filepath.Join(dir, name+".partial")
	os.WriteFile(tmp, []byte("replacement"), 0o755)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the replacement's checksum", func() bool {
		b, ok := c.ByFilename(name)
		return ok && b.SHA256 == testutil.SHA256([]byte("replacement"))
	})

	// Removed: withdrawn.
	os.Remove(filepath.Join(dir, name))
	testutil.WaitFor(t, 30*time.Second, name+" to disappear", func() bool { _, _, err := c.Open(name); return errors.Is(err, ErrNotFound) })
	if _, ok := c.ByFilename(name); ok {
		t.Errorf("%s still listed after removal", name)
	}
}

func TestOpenDetectsInPlaceRewrite(t *testing.T) {
	dir := t.TempDir()
	name := "storage-server-1.0.0-linux-x86_64"
	p := writeOld(t, dir, name, []byte("original"))
	o := testOptions(dir, "")
	o.NoWatch = true // only Open's identity check can notice
	c := open(t, o)
	f, b, err := c.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b.SHA256 != testutil.SHA256([]byte("original")) {
		t.Fatal("wrong checksum")
	}
	// Same size, new content, written in place.
	if err := os.WriteFile(p, []byte("ORIGINAL"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-30 * time.Minute)
	os.Chtimes(p, old, old)
	if _, _, err := c.Open(name); !errors.Is(err, ErrChanged) {
		t.Fatalf("Open after an in-place rewrite = %v, want ErrChanged", err)
	}
	testutil.WaitFor(t, 30*time.Second, "the rewritten file to be re-hashed", func() bool {
		f, b, err := c.Open(name)
		if err != nil {
			return false
		}
		defer f.Close()
		data, _ := io.ReadAll(f)
		return b.SHA256 == testutil.SHA256([]byte("ORIGINAL")) && testutil.SHA256(data) == b.SHA256
	})
}

func TestOptionsValidate(t *testing.T) {
	err := Options{HashWorkers: -1, Settle: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Dir") || !strings.Contains(err.Error(), "HashWorkers") || !strings.Contains(err.Error(), "Settle") {
		t.Errorf("Validate() = %v, want every problem named", err)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
