package fetch

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
)

// Issue 10 item 10: a symlink planted at {version}/storage-server.partial
// must not make the agent overwrite (and chmod 0755) the file it points to;
// the download still succeeds.
func TestPlantedPartialSymlinkLeavesTargetUntouched(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	m := newTestMaster(t)
	b := m.publish("1.0.0", payload(100000, 7))
	dir := t.TempDir()
	f := m.fetcher(t, dir)

	victim := filepath.Join(t.TempDir(), "authorized_keys")
	orig := []byte("ssh-ed25519 AAAA... admin@host\n")
	if err := os.WriteFile(victim, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.Cache().Dir("1.0.0"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, f.Cache().PartialPath("1.0.0")); err != nil {
		t.Fatal(err)
	}

	e, err := f.Ensure(context.Background(), Latest)
	if err != nil {
		t.Fatalf("Ensure with a planted symlink: %v", err)
	}
	if got, err := os.ReadFile(victim); err != nil || !bytes.Equal(got, orig) {
		t.Errorf("the symlink's target was overwritten (%d bytes now, %d before; err %v)", len(got), len(orig), err)
	}
	if st, err := os.Stat(victim); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the symlink's target: mode %v, %v; want 0600 unchanged", st.Mode().Perm(), err)
	}
	if st, err := os.Lstat(e.Path); err != nil || !st.Mode().IsRegular() {
		t.Errorf("cached executable %s: %v, %v; want a regular file", e.Path, st, err)
	}
	if got, _ := os.ReadFile(e.Path); !bytes.Equal(got, b.data) {
		t.Error("cached executable differs from the published binary")
	}
	assertNothingUnverified(t, dir)
}

// Issue 10 item 10: a cache directory other users can write to is refused at
// once (not retried) with what to do.
func TestWorldWritableCacheDirRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix modes")
	}
	m := newTestMaster(t)
	m.publish("1.0.0", payload(1000, 1))
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	f := m.fetcher(t, dir)
	_, err := f.Ensure(context.Background(), Latest)
	if !errors.Is(err, ErrCacheDir) || !errors.Is(err, cache.ErrUnsafeDir) ||
		!strings.Contains(err.Error(), "writable by other users") || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Fatalf("Ensure in a world-writable cache dir = %v, want ErrCacheDir/ErrUnsafeDir saying how to fix it", err)
	}
	if strings.Contains(err.Error(), "attempt 2") {
		t.Errorf("an unsafe cache dir was retried: %v", err)
	}
	if n := len(m.downloads()); n != 0 {
		t.Errorf("downloads into an unsafe cache dir = %d, want 0", n)
	}
}

// cachedTwo fills a cache with verified 1.0.0 and 1.2.0 from a master that
// is then shut down.
func cachedTwo(t *testing.T) (*testMaster, string, map[string]cache.Entry) {
	t.Helper()
	m := newTestMaster(t)
	m.publish("1.0.0", payload(1000, 1))
	m.publish("1.2.0", payload(1200, 3))
	dir := t.TempDir()
	f := m.fetcher(t, dir)
	got := map[string]cache.Entry{}
	for _, v := range []string{"1.0.0", "1.2.0"} {
		e, err := f.Ensure(context.Background(), v)
		if err != nil {
			t.Fatalf("Ensure(%s): %v", v, err)
		}
		got[v] = e
	}
	m.srv.Close()
	return m, dir, got
}

// Issue 10 item 12: with the master down, Ensure(latest) reports after the
// first failed request which verified cached version exists, while it goes
// on retrying; a version recorded as failed is never the one reported.
func TestUnreachableMasterReportsCachedVersion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failed func(cache.Entry) bool
		want   string
	}{
		{"newest", nil, "1.2.0"},
		{"newest failed on this agent", func(e cache.Entry) bool { return e.Version == "1.2.0" }, "1.0.0"},
		{"all failed", func(cache.Entry) bool { return true }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, dir, _ := cachedTwo(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var mu sync.Mutex
			var calls []string
			var errs []error
			f := m.fetcher(t, dir, func(o *Options) {
				// Slow retries: the report must not wait for them.
				o.Attempts, o.Retries = 5, 5
				o.BackoffMin, o.BackoffMax = 10*time.Second, 60*time.Second
				o.Failed = tc.failed
				o.OnUnreachable = func(cached *cache.Entry, err error) {
					mu.Lock()
					defer mu.Unlock()
					v := ""
					if cached != nil {
						v = cached.Version
					}
					calls = append(calls, v)
					errs = append(errs, err)
					cancel() // the operator takes the hint
				}
			})
			done := make(chan error, 1)
			go func() { _, err := f.Ensure(ctx, Latest); done <- err }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Ensure(latest) with the master down succeeded")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no report within 30 s of the master being unreachable")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(calls) != 1 || calls[0] != tc.want {
				t.Errorf("OnUnreachable calls = %q, want one with cached %q", calls, tc.want)
			}
			if len(errs) == 1 && !strings.Contains(errs[0].Error(), "connect") && !errors.Is(errs[0], ErrUnavailable) {
				t.Errorf("reported error = %v, want the connection failure", errs[0])
			}
		})
	}
}

// Issue 10 item 12: Offline uses the cache at once, never asks the master,
// re-verifies by hash, and never returns a version recorded as failed or
// built for another platform.
func TestOffline(t *testing.T) {
	m, dir, entries := cachedTwo(t)
	f := m.fetcher(t, dir)
	asked := len(m.requests())
	start := time.Now()
	e, err := f.Offline(context.Background(), Latest)
	if err != nil || e.Version != "1.2.0" || e.Checksum != entries["1.2.0"].Checksum {
		t.Fatalf("Offline(latest) = %+v, %v; want 1.2.0", e, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Offline took %s: it must not wait for the master", d)
	}
	if e, err := f.Offline(context.Background(), "1.0.0"); err != nil || e.Version != "1.0.0" {
		t.Errorf("Offline(1.0.0) = %+v, %v", e, err)
	}

	failed := m.fetcher(t, dir, func(o *Options) { o.Failed = func(e cache.Entry) bool { return e.Version == "1.2.0" } })
	if e, err := failed.Offline(context.Background(), Latest); err != nil || e.Version != "1.0.0" {
		t.Errorf("Offline(latest) with 1.2.0 failed = %+v, %v; want 1.0.0", e, err)
	}
	if _, err := failed.Offline(context.Background(), "1.2.0"); !errors.Is(err, ErrRecordedFailed) {
		t.Errorf("Offline(1.2.0) with 1.2.0 failed = %v, want ErrRecordedFailed", err)
	}
	if e, err := failed.NewestVerified(context.Background()); err != nil || e.Version != "1.0.0" {
		t.Errorf("NewestVerified with 1.2.0 failed = %+v, %v; want 1.0.0", e, err)
	}

	other := m.fetcher(t, dir, func(o *Options) {
		o.Platform, o.Arch = "linux", "arm"
		if p, a := f.Platform(); p == "linux" && a == "arm" {
			o.Arch = "aarch64"
		}
	})
	if _, err := other.Offline(context.Background(), Latest); !errors.Is(err, cache.ErrNotCached) {
		t.Errorf("Offline for another platform = %v, want ErrNotCached", err)
	}

	// A changed file is caught by the hash and skipped.
	if err := os.WriteFile(entries["1.2.0"].Path, []byte("tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	if e, err := f.Offline(context.Background(), Latest); err != nil || e.Version != "1.0.0" {
		t.Errorf("Offline(latest) with 1.2.0 tampered = %+v, %v; want 1.0.0", e, err)
	}
	if n := len(m.requests()); n != asked {
		t.Errorf("requests to the master during Offline = %d, want 0", n-asked)
	}
}
