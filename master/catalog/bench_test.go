package catalog

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkHash measures a cold scan: streaming SHA-256 of 4 files in parallel.
func BenchmarkHash(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 32<<20)
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{"storage-server-1.0.0-linux-x86_64", "storage-server-1.0.0-linux-aarch64",
		"storage-server-1.0.0-darwin-x86_64", "storage-server-1.0.0-darwin-aarch64"} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	b.SetBytes(4 * int64(len(data)))
	for b.Loop() {
		c, err := Open(context.Background(), Options{Dir: dir, NoWatch: true, Rescan: -1})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
