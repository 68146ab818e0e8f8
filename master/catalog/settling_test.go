package catalog

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// Issue 11 item 10: SettlingAtOpen counts the binaries found at start-up
// that had not settled yet (not files that are no binaries), and they are
// registered once they settle.
func TestSettlingAtOpen(t *testing.T) {
	for _, background := range []bool{false, true} {
		dir := t.TempDir()
		writeOld(t, dir, "storage-server-1.0.0-linux-x86_64", []byte("old"))
		for _, n := range []string{"storage-server-1.1.0-linux-x86_64", "sutra-agent-1.0.0-linux-x86_64", "notes.txt"} {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("fresh"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		o := testOptions(dir, t.TempDir())
		o.Settle, o.HashInBackground = 2*time.Second, background
		c := open(t, o)
		if err := c.WaitHashed(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n, s := len(c.List("")), c.SettlingAtOpen(); n != 1 || s != 2 {
			t.Errorf("background %v: at open %d registered, %d settling; want 1 and 2", background, n, s)
		}
		testutil.WaitFor(t, 30*time.Second, "the settling binaries to be registered", func() bool { return len(c.List("")) == 3 })
	}
}
