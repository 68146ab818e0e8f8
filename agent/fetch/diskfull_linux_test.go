package fetch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// mountTinyTmpfs mounts a 1 MiB tmpfs in a temporary directory, or skips the
// test when mounting is not permitted (not root, or in a container without
// CAP_SYS_ADMIN).
func mountTinyTmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Skipf("cannot mount a 1 MiB tmpfs to fill (needs root / CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// Issue 10 item 12: a download that fails for lack of space deletes its
// partial (the disk is not left full), says which directory to free space
// in, and is not retried; once something fits, fetching works.
func TestDiskFullDeletesPartial(t *testing.T) {
	mnt := mountTinyTmpfs(t)
	m := newTestMaster(t)
	m.publish("1.0.0", payload(3<<20, 1)) // 3 MiB on a 1 MiB file system
	dir := filepath.Join(mnt, "cache")
	f := m.fetcher(t, dir)
	before := freeBytes(t, mnt)

	_, err := f.Ensure(context.Background(), Latest)
	want := "no space left on device in " + f.Cache().Dir("1.0.0") + ": free space"
	if !errors.Is(err, ErrCacheDir) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Ensure on a full disk = %v, want ErrCacheDir containing %q", err, want)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Ensure on a full disk = %v, want it to wrap ENOSPC", err)
	}
	if strings.Contains(err.Error(), "attempt 2") {
		t.Errorf("a full disk was retried: %v", err)
	}
	for _, p := range []string{f.Cache().PartialPath("1.0.0"), f.Cache().PartialPath("1.0.0") + ".json", f.Cache().Path("1.0.0")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind after ENOSPC: %v", p, err)
		}
	}
	if after := freeBytes(t, mnt); after < before-64<<10 {
		t.Errorf("free space after the failed fetch = %d bytes, before %d: the partial still fills the disk", after, before)
	}

	// Space for a smaller binary is there again.
	small := m.publish("2.0.0", payload(300<<10, 2))
	e, err := f.Ensure(context.Background(), Latest)
	if err != nil || e.Version != "2.0.0" || e.Checksum != small.info.Checksum {
		t.Fatalf("Ensure after freeing = %+v, %v; want 2.0.0", e, err)
	}
}
