package fetch

import (
	"context"
	"testing"
	"time"
)

// BenchmarkEnsureSignedVsUnsigned: one whole fetch (metadata, download,
// checksum, verify endpoint, commit) of a 200 MB binary from the loopback
// test master, without and with release signatures (checked while the bytes
// stream in). Compare the two ns/op.
func BenchmarkEnsureSignedVsUnsigned(b *testing.B) {
	data := payload(200<<20, 3)
	k := newReleaseKey(b)
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		if signed {
			name = "signed"
		}
		b.Run(name, func(b *testing.B) {
			m := newTestMaster(b)
			bin := m.publish("1.0.0", data)
			if signed {
				m.serveSig(bin, signBin(b, k, bin, "1.0.0", data))
			}
			b.SetBytes(int64(len(data)))
			for range b.N {
				b.StopTimer()
				o := Options{BaseURL: m.srv.URL, CacheDir: b.TempDir(), Timeout: 5 * time.Minute}
				if signed {
					o.Keys = keyring(b, k)
				}
				f, err := New(o)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := f.Ensure(context.Background(), "1.0.0"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
