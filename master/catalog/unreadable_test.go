package catalog

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// envAsNobody marks the re-executed test process that runs as an
// unprivileged user (root reads files whatever their permissions).
const envAsNobody = "SUTRA_CATALOG_TEST_AS_NOBODY"

// Issue 9 item 10: a binary made unreadable after registration is withdrawn
// once with its reason logged once (no flapping per request), and published
// again when it is readable again.
func TestUnreadableBinaryIsWithdrawnOnce(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("chmod 000 does not make a file unreadable on Windows")
	}
	if os.Geteuid() == 0 && os.Getenv(envAsNobody) == "" {
		runAsNobody(t)
		return
	}
	dir := t.TempDir()
	name := "storage-server-1.0.0-linux-x86_64"
	p := writeOld(t, dir, name, []byte("binary"))
	var (
		rec  recorder
		logs testutil.SyncBuffer
	)
	o := testOptions(dir, t.TempDir())
	o.OnEvent = rec.add
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c := open(t, o)
	if _, ok := c.ByFilename(name); !ok {
		t.Fatal("not published")
	}
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(p); err == nil {
		f.Close()
		t.Skip("this user reads mode 000 files (root or CAP_DAC_OVERRIDE)")
	}
	// Download attempts meanwhile, as agents would make them.
	for range 20 {
		if f, _, err := c.Open(name); err == nil {
			f.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	testutil.WaitFor(t, 30*time.Second, "the unreadable binary to be withdrawn", func() bool {
		_, _, err := c.Open(name)
		return errors.Is(err, ErrNotFound)
	})
	for range 20 {
		if _, _, err := c.Open(name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open of the withdrawn binary = %v, want ErrNotFound (no flapping)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	count := func(kind EventKind) (n int) {
		for _, e := range rec.all() {
			if e.Filename == name && e.Kind == kind {
				n++
			}
		}
		return n
	}
	if n := count(Registered); n != 1 {
		t.Errorf("%d Registered events, want 1 (the initial one; no re-publishing while unreadable)", n)
	}
	if n := count(Removed); n != 1 {
		t.Errorf("%d Removed events, want 1", n)
	}
	if r, ok := rec.skipped(name); !ok || !strings.Contains(r, "permission denied") {
		t.Errorf("skip reason %q, want it to say permission denied", r)
	}
	if n := strings.Count(logs.String(), "permission denied"); n < 1 || n > 2 {
		t.Errorf("the reason is logged %d times, want once or twice (removed, skipped):\n%s", n, logs.String())
	}

	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the binary to be published again", func() bool {
		f, _, err := c.Open(name)
		if err == nil {
			f.Close()
		}
		return err == nil
	})
}

// runAsNobody re-runs the calling test in a copy of the test binary as user
// nobody (65534) and reports its outcome.
func runAsNobody(t *testing.T) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	home, err := os.MkdirTemp("", "catalog-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	bin := filepath.Join(home, "catalog.test")
	if err := copyFile(exe, bin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{home, bin} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Dir = home
	cmd.Env = append(os.Environ(), envAsNobody+"=1", "TMPDIR="+home, "HOME="+home)
	setNobody(cmd)
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("the test run as nobody failed: %v", err)
	case bytes.Contains(out, []byte("--- SKIP")):
		t.Skip("skipped as nobody")
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
