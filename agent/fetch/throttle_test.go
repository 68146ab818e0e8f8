package fetch

import (
	"context"
	"testing"
	"time"
)

// TestDownloadRateLimit: with download_rate_limit at 1 MB/s a 1.5 MB
// binary takes about 1.5 s to fetch (the unlimited fetch of the same
// binary from the same master takes milliseconds).
func TestDownloadRateLimit(t *testing.T) {
	m := newTestMaster(t)
	const size = 1_500_000
	m.publish("1.0.0", payload(size, 7))

	start := time.Now()
	if _, err := m.fetcher(t, t.TempDir()).Ensure(context.Background(), "1.0.0"); err != nil {
		t.Fatal(err)
	}
	unlimited := time.Since(start)

	f := m.fetcher(t, t.TempDir(), func(o *Options) { o.DownloadRateLimit = 1_000_000 })
	start = time.Now()
	e, err := f.Ensure(context.Background(), "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	limited := time.Since(start)
	if e.Version != "1.0.0" {
		t.Fatalf("Ensure = %+v", e)
	}
	if limited < 1300*time.Millisecond || limited > 3*time.Second {
		t.Errorf("fetch of %d bytes under 1 MB/s took %s (unlimited %s), want about 1.5s", size, limited, unlimited)
	}
	t.Logf("unlimited %s, limited to 1 MB/s %s", unlimited, limited)
}
