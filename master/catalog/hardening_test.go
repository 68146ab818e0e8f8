package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/artifact"
	"github.com/sutragrid/sutra/internal/testutil"
)

// Issue 9 item 9: a rewrite in place that keeps the size and sets the mtime
// back is re-hashed, while running and across a restart (checksum cache).
func TestRewriteKeepingSizeAndMtimeIsRehashed(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	name := "storage-server-1.0.0-linux-x86_64"
	p := writeOld(t, dir, name, []byte("version one"))
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	mtime := fi.ModTime()
	rewrite := func(content string) {
		t.Helper()
		time.Sleep(20 * time.Millisecond) // a ctime tick apart, even on coarse clocks
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		if now, _ := os.Stat(p); now.Size() != fi.Size() || !now.ModTime().Equal(mtime) {
			t.Fatalf("test setup: size/mtime not kept: %d %s", now.Size(), now.ModTime())
		}
	}
	checksum := func(c *Catalog) string {
		b, _ := c.ByFilename(name)
		return b.SHA256
	}

	o := testOptions(dir, data)
	o.NoWatch = true
	c := open(t, o)
	if got := checksum(c); got != testutil.SHA256([]byte("version one")) {
		t.Fatalf("checksum = %s, want the one of version one", got)
	}
	rewrite("version two")
	if _, _, err := c.Open(name); !errors.Is(err, ErrChanged) {
		t.Fatalf("Open after a same-size, same-mtime rewrite = %v, want ErrChanged", err)
	}
	testutil.WaitFor(t, 30*time.Second, "version two to be hashed", func() bool { return checksum(c) == testutil.SHA256([]byte("version two")) })
	c.Close()

	rewrite("version 3!!")
	c2 := open(t, o)
	if got, want := checksum(c2), testutil.SHA256([]byte("version 3!!")); got != want {
		t.Fatalf("after restart checksum = %s, want %s (the cache kept the old checksum)", got, want)
	}
}

// Issue 9 item 3: a FIFO renamed over a published binary never blocks Open:
// it is refused at once and withdrawn.
func TestFIFOOverBinaryNeverBlocks(t *testing.T) {
	dir := t.TempDir()
	name := "storage-server-1.0.0-linux-x86_64"
	writeOld(t, dir, name, []byte("binary"))
	o := testOptions(dir, "")
	o.NoWatch = true
	var rec recorder
	o.OnEvent = rec.add
	c := open(t, o)
	fifo := filepath.Join(dir, "tmp-fifo")
	if err := testutil.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	if err := os.Rename(fifo, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		f, _, err := c.Open(name)
		if f != nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrChanged) {
			t.Fatalf("Open of a FIFO = %v, want ErrChanged", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open blocked on a FIFO for 10s")
	}
	testutil.WaitFor(t, 30*time.Second, "the FIFO to be skipped", func() bool {
		r, ok := rec.skipped(name)
		return ok && strings.Contains(r, "not a regular file")
	})
	if _, _, err := c.Open(name); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after the FIFO was seen = %v, want ErrNotFound", err)
	}
	// The hasher too: a start-up scan of a directory holding it returns.
	o2 := testOptions(dir, "")
	o2.NoWatch = true
	opened := make(chan error, 1)
	go func() {
		c2, err := Open(context.Background(), o2)
		if err == nil {
			c2.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open (scan) blocked on a FIFO for 10s")
	}
	// hash itself, as the watcher would call it after a race with statEntry.
	hctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hashDone := make(chan error, 1)
	go func() {
		_, err := c.hash(hctx, name, mustParse(t, name))
		hashDone <- err
	}()
	select {
	case err := <-hashDone:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("hash of a FIFO = %v, want not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hash blocked on a FIFO for 10s")
	}
}

// Issue 9 item 11: with HashInBackground, Open returns before the files the
// cache does not know are hashed; those answer ErrHashing until published.
func TestHashInBackground(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	cached, a, b := "storage-server-1.0.0-linux-x86_64", "storage-server-2.0.0-linux-x86_64", "storage-server-3.0.0-linux-x86_64"
	writeOld(t, dir, cached, []byte("cached"))
	c0 := open(t, testOptions(dir, data))
	c0.Close()
	writeOld(t, dir, a, []byte("a"))
	writeOld(t, dir, b, []byte("b"))

	release := make(chan struct{})
	first := make(chan string, 1)
	o := testOptions(dir, data)
	o.HashWorkers = 1
	o.HashInBackground = true
	var held atomic.Bool
	o.OnEvent = func(e Event) {
		if e.Kind == Registered && e.Hashed && held.CompareAndSwap(false, true) {
			first <- e.Filename
			<-release // hold hashing until the test has looked
		}
	}
	opened := make(chan *Catalog, 1)
	go func() {
		c, err := Open(context.Background(), o)
		if err != nil {
			t.Error(err)
			close(opened)
			return
		}
		opened <- c
	}()
	var c *Catalog
	select {
	case c = <-opened:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Open waited for hashing (HashInBackground)")
	}
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	defer close(release)
	if _, ok := c.ByFilename(cached); !ok {
		t.Errorf("%s (checksum cached) not published when Open returned", cached)
	}
	got := <-first
	other := map[string]string{a: b, b: a}[got]
	if n := c.Hashing(); n != 2 {
		t.Errorf("Hashing() = %d while %s is being published and %s waits, want 2", n, got, other)
	}
	if _, _, err := c.Open(other); !errors.Is(err, ErrHashing) {
		t.Errorf("Open(%s) while it waits to be hashed = %v, want ErrHashing", other, err)
	}
	release <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitHashed(ctx); err != nil {
		t.Fatalf("WaitHashed: %v", err)
	}
	for _, name := range []string{a, b} {
		if _, ok := c.ByFilename(name); !ok {
			t.Errorf("%s not published after WaitHashed", name)
		}
	}
	if n := c.Hashing(); n != 0 {
		t.Errorf("Hashing() = %d after WaitHashed, want 0", n)
	}
}

func mustParse(t *testing.T, name string) artifact.Name {
	t.Helper()
	an, err := artifact.ParseFilename(name)
	if err != nil {
		t.Fatal(err)
	}
	return an
}
