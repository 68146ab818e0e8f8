package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// outsideFile is a file outside the cache that a planted link points at; the
// test fails if its content or mode changes.
type outsideFile struct {
	path string
	data []byte
	mode os.FileMode
}

func newOutsideFile(t *testing.T) outsideFile {
	t.Helper()
	o := outsideFile{path: filepath.Join(t.TempDir(), "victim"), data: []byte("precious data, not a binary\n"), mode: 0o640}
	if err := os.WriteFile(o.path, o.data, o.mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(o.path, o.mode); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o outsideFile) assertUntouched(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(o.path)
	if err != nil || !bytes.Equal(got, o.data) {
		t.Errorf("file outside the cache was changed: %q, %v; want %q", got, err, o.data)
	}
	if st, err := os.Stat(o.path); err != nil || st.Mode().Perm() != o.mode {
		t.Errorf("file outside the cache: mode %v, %v; want %v", st.Mode().Perm(), err, o.mode)
	}
}

// download writes data through OpenPartial and commits it, as package fetch does.
func download(t *testing.T, c *Cache, version string, resume bool, data []byte) (Entry, error) {
	t.Helper()
	if err := c.Prepare(version); err != nil {
		return Entry{}, err
	}
	f, err := c.OpenPartial(version, resume)
	if err != nil {
		return Entry{}, err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return Entry{}, err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return Entry{}, err
	}
	if err := f.Close(); err != nil {
		return Entry{}, err
	}
	sum := sha256.Sum256(data)
	return c.Commit(Entry{Version: version, Platform: "linux", Arch: "x86_64", Checksum: hex.EncodeToString(sum[:]),
		Size: int64(len(data)), SourceURL: "http://m/binaries/x", FetchedAt: time.Now()})
}

// Issue 10 item 10: a symlink (or hard link) planted at the partial path, at
// the final path, at meta.json or in place of the version directory must
// never make the agent write, truncate or chmod a file outside its cache.
func TestPlantedLinksNeverTouchFilesOutside(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	data := []byte("the real storage-server binary")
	plant := map[string]func(t *testing.T, c *Cache, o outsideFile){
		"symlink at partial": func(t *testing.T, c *Cache, o outsideFile) {
			mustSymlink(t, o.path, c.PartialPath("1.0.0"))
		},
		"relative symlink at partial": func(t *testing.T, c *Cache, o outsideFile) {
			rel, err := filepath.Rel(c.Dir("1.0.0"), o.path)
			if err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, rel, c.PartialPath("1.0.0"))
		},
		"hard link at partial": func(t *testing.T, c *Cache, o outsideFile) {
			if err := os.Link(o.path, c.PartialPath("1.0.0")); err != nil {
				t.Skip("hard link across temp dirs:", err)
			}
		},
		"symlink at executable": func(t *testing.T, c *Cache, o outsideFile) {
			mustSymlink(t, o.path, c.Path("1.0.0"))
		},
		"symlink at meta.json": func(t *testing.T, c *Cache, o outsideFile) {
			mustSymlink(t, o.path, filepath.Join(c.Dir("1.0.0"), MetaFile))
		},
		"symlink at partial state": func(t *testing.T, c *Cache, o outsideFile) {
			mustSymlink(t, o.path, c.PartialPath("1.0.0")+PartialStateSuffix)
		},
	}
	for name, plantIt := range plant {
		for _, resume := range []bool{true, false} {
			t.Run(name, func(t *testing.T) {
				c := newCache(t)
				o := newOutsideFile(t)
				if err := c.Prepare("1.0.0"); err != nil {
					t.Fatal(err)
				}
				plantIt(t, c, o)
				if strings.Contains(name, "state") {
					if err := c.WritePartialState("1.0.0", []byte(`{"url":"x"}`)); err != nil {
						t.Fatalf("WritePartialState: %v", err)
					}
				}
				e, err := download(t, c, "1.0.0", resume, data)
				if err != nil {
					t.Fatalf("download with %s (resume %v): %v", name, resume, err)
				}
				o.assertUntouched(t)
				got, err := c.Verified(context.Background(), "1.0.0")
				if err != nil || got.Checksum != e.Checksum {
					t.Fatalf("Verified after download = %+v, %v", got, err)
				}
				if b, _ := os.ReadFile(e.Path); !bytes.Equal(b, data) {
					t.Errorf("cached executable = %q, want %q", b, data)
				}
				if st, err := os.Lstat(e.Path); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 {
					t.Errorf("cached executable: %v, %v; want a regular 0755 file", st, err)
				}
				if err := c.DiscardPartial("1.0.0"); err != nil {
					t.Error(err)
				}
				o.assertUntouched(t)
			})
		}
	}
}

func TestPlantedVersionDirSymlinkIsReplaced(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	c := newCache(t)
	if err := c.Prepare("0.1.0"); err != nil { // creates the artifact dir
		t.Fatal(err)
	}
	outside := t.TempDir()
	mustSymlink(t, outside, c.Dir("1.0.0"))
	if _, err := download(t, c, "1.0.0", true, []byte("bin")); err != nil {
		t.Fatalf("download over a symlinked version dir: %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("files written outside the cache: %v", ents)
	}
	if st, err := os.Lstat(c.Dir("1.0.0")); err != nil || !st.IsDir() {
		t.Errorf("version dir = %v, %v; want a real directory", st, err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestDirectoriesArePrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix modes")
	}
	parent := t.TempDir()
	c, err := New(Options{Dir: filepath.Join(parent, "cache"), Platform: "linux"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := download(t, c, "1.0.0", false, []byte("bin")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(parent, "cache"), c.Root(), c.Dir("1.0.0")} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, %v; want 0700", d, st.Mode().Perm(), err)
		}
	}
}

// A cache directory other users can write to is refused, with what to do.
func TestSharedCacheDirIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix modes")
	}
	for _, tc := range []struct {
		name  string
		which func(c *Cache) string
		mode  os.FileMode
	}{
		{"world-writable cache dir", func(c *Cache) string { return filepath.Dir(c.Root()) }, 0o777},
		{"group-writable cache dir", func(c *Cache) string { return filepath.Dir(c.Root()) }, 0o770},
		{"world-writable sticky cache dir", func(c *Cache) string { return filepath.Dir(c.Root()) }, 0o777 | os.ModeSticky},
		{"world-writable artifact dir", func(c *Cache) string { return c.Root() }, 0o777},
		{"world-writable version dir", func(c *Cache) string { return c.Dir("1.0.0") }, 0o777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t)
			good := put(t, c, "1.0.0", []byte("bin"))
			dir := tc.which(c)
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := c.Prepare("1.0.0")
			if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "chmod go-w") {
				t.Errorf("Prepare in a %s = %v, want ErrUnsafeDir naming %s and the fix", tc.name, err, dir)
			}
			if _, err := c.Verified(context.Background(), "1.0.0"); !errors.Is(err, ErrUnsafeDir) {
				t.Errorf("Verified in a %s = %v, want ErrUnsafeDir", tc.name, err)
			}
			if _, err := c.NewestVerified(context.Background()); err == nil {
				t.Errorf("NewestVerified in a %s = nil error", tc.name)
			}
			// Fixed as the message says: usable again, nothing was deleted.
			if err := os.Chmod(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if e, err := c.Verified(context.Background(), "1.0.0"); err != nil || e.Checksum != good.Checksum {
				t.Errorf("Verified after chmod = %+v, %v", e, err)
			}
		})
	}
}

func TestCacheDirOwnedByAnotherUserIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix owners")
	}
	if os.Geteuid() != 0 {
		t.Skip("changing a directory's owner needs root")
	}
	c := newCache(t)
	put(t, c, "1.0.0", []byte("bin"))
	if err := os.Chown(c.Root(), 4242, 4242); err != nil {
		t.Skip("chown:", err)
	}
	err := c.Prepare("2.0.0")
	if !errors.Is(err, ErrUnsafeDir) || !strings.Contains(err.Error(), "uid 4242") || !strings.Contains(err.Error(), "chown") {
		t.Errorf("Prepare in a dir of uid 4242 = %v, want ErrUnsafeDir naming the owner and the fix", err)
	}
}
