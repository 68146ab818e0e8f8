package agentlog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteRotateTail(t *testing.T) {
	path := Path(t.TempDir())
	l, err := Open(path, 200)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		fmt.Fprintf(l, "line %02d of the agent log\n", i) // 25 bytes each
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if st.Size() > 200 {
			t.Errorf("%s is %d bytes, want at most the 200-byte cap", filepath.Base(p), st.Size())
		}
	}
	got := Tail(path, 3)
	want := []string{"line 27 of the agent log", "line 28 of the agent log", "line 29 of the agent log"}
	if !slices.Equal(got, want) {
		t.Fatalf("Tail(3) = %q, want %q", got, want)
	}
	// More lines than the current file holds come from the rotated one, in order.
	got = Tail(path, 10)
	if len(got) != 10 || got[9] != want[2] || got[0] != "line 20 of the agent log" {
		t.Fatalf("Tail(10) = %q, want lines 20..29", got)
	}
}

func TestTailMissingFile(t *testing.T) {
	if got := Tail(filepath.Join(t.TempDir(), "none.log"), 5); got != nil {
		t.Fatalf("Tail of a missing file = %q, want nil", got)
	}
}
