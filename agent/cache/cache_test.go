package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newCache(t *testing.T) *Cache {
	t.Helper()
	c, err := New(Options{Dir: t.TempDir(), Platform: "linux"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// put commits data as version through a partial file, as fetch does.
func put(t *testing.T, c *Cache, version string, data []byte) Entry {
	t.Helper()
	if err := c.Prepare(version); err != nil {
		t.Fatal(err)
	}
	p := c.PartialPath(version)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	e, err := c.Commit(Entry{Version: version, Checksum: hex.EncodeToString(sum[:]), Size: int64(len(data)),
		SourceURL: "http://m/binaries/x", FetchedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVerifiedAndCorrupt(t *testing.T) {
	c := newCache(t)
	e := put(t, c, "1.0.0", []byte("binary one"))
	got, err := c.Verified(context.Background(), "1.0.0")
	if err != nil || got.Path != e.Path || got.Checksum != e.Checksum {
		t.Fatalf("Verified = %+v, %v", got, err)
	}
	if _, err := c.Verified(context.Background(), "9.9.9"); !errors.Is(err, ErrNotCached) {
		t.Errorf("Verified(uncached) = %v, want ErrNotCached", err)
	}
	if err := os.WriteFile(e.Path, []byte("binary 0ne"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verified(context.Background(), "1.0.0"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Verified(changed) = %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(e.Path); !os.IsNotExist(err) {
		t.Errorf("corrupt executable still present: %v", err)
	}
	if _, err := c.Verified(context.Background(), "1.0.0"); !errors.Is(err, ErrNotCached) {
		t.Errorf("Verified after removal = %v, want ErrNotCached", err)
	}
}

func TestVersionsAreNeverPaths(t *testing.T) {
	c := newCache(t)
	for _, v := range []string{"../x", "1.0.0/../../etc", "", "v1.0.0", "1.0"} {
		if err := c.Prepare(v); err == nil {
			t.Errorf("Prepare(%q) = nil, want an invalid-version error", v)
		}
		if _, err := c.Verified(context.Background(), v); err == nil {
			t.Errorf("Verified(%q) = nil error", v)
		}
	}
}

func TestNewestVerifiedSkipsCorrupt(t *testing.T) {
	c := newCache(t)
	put(t, c, "1.0.0", []byte("one"))
	put(t, c, "1.9.0", []byte("nine"))
	newest := put(t, c, "1.10.0", []byte("ten"))
	if e, err := c.NewestVerified(context.Background()); err != nil || e.Version != "1.10.0" {
		t.Fatalf("NewestVerified = %+v, %v; want 1.10.0", e, err)
	}
	if err := os.Truncate(newest.Path, 1); err != nil {
		t.Fatal(err)
	}
	if e, err := c.NewestVerified(context.Background()); err != nil || e.Version != "1.9.0" {
		t.Errorf("NewestVerified with 1.10.0 corrupt = %+v, %v; want 1.9.0", e, err)
	}
	empty := newCache(t)
	if _, err := empty.NewestVerified(context.Background()); !errors.Is(err, ErrNotCached) {
		t.Errorf("NewestVerified(empty) = %v, want ErrNotCached", err)
	}
}

func TestPruneKeepsNewestAndInUse(t *testing.T) {
	c := newCache(t)
	for _, v := range []string{"0.9.0", "1.0.0", "1.1.0", "1.2.0", "2.0.0"} {
		put(t, c, v, []byte(v))
	}
	// An abandoned partial download of an old version.
	if err := c.Prepare("0.1.0"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.PartialPath("0.1.0"), []byte("half"), 0o600)
	// Something else in the cache root is left alone.
	os.WriteFile(filepath.Join(c.Root(), "README"), nil, 0o644)

	removed, err := c.Prune(3, func(v string) bool { return v == "0.9.0" })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"1.0.0": true, "0.1.0": true}
	if len(removed) != len(want) || !want[removed[0]] || !want[removed[1]] {
		t.Errorf("Prune removed %v, want 1.0.0 and 0.1.0", removed)
	}
	left, _ := c.Versions()
	if len(left) != 4 || left[0] != "2.0.0" || left[3] != "0.9.0" {
		t.Errorf("left %v, want [2.0.0 1.2.0 1.1.0 0.9.0]", left)
	}
	if _, err := os.Stat(filepath.Join(c.Root(), "README")); err != nil {
		t.Errorf("Prune removed a foreign file: %v", err)
	}
}

func TestExeSuffix(t *testing.T) {
	c, err := New(Options{Dir: "/c", Platform: "windows"})
	if err != nil {
		t.Fatal(err)
	}
	if got := filepath.Base(c.Path("1.0.0")); got != "storage-server.exe" {
		t.Errorf("windows executable = %s, want storage-server.exe", got)
	}
}
