package master

import (
	"strings"
	"testing"
)

// Issue 9 item 11: the start-up lines say how many binaries are still being
// hashed (serving does not wait for them), and keep the design document's
// "Auto-registered" line once they are; a restart with the checksum cache
// registers at once.
func TestStartupLinesCountHashing(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", make([]byte, 1<<20))
	writeBinary(t, dir, "storage-server-1.1.0-linux-x86_64", make([]byte, 1<<20+1))
	for i, want := range [][]string{
		{"⏳ Hashing 2 binaries in the background (0 registered from the checksum cache)", "📦 Auto-registered 2 binaries"},
		{"📦 Auto-registered 2 binaries"},
	} {
		var buf syncBuffer
		startMaster(t, dir, data, func(o *Options) { o.Console = &buf }).stop()
		out := buf.String()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("start %d: console lacks %q:\n%s", i+1, w, out)
			}
		}
		if i == 1 && strings.Contains(out, "⏳") {
			t.Errorf("start %d (all cached): console says it is hashing:\n%s", i+1, out)
		}
	}
}
