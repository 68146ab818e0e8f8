package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i < to; i++ {
		fmt.Fprintf(f, "line %d\n", i)
	}
}

func TestRotateIfNeeded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.log")
	if rotated, err := rotateIfNeeded(path, 10, 3); rotated || err != nil {
		t.Fatalf("rotate of a missing file = %v, %v; want nothing", rotated, err)
	}
	writeLines(t, path, 0, 3) // 21 bytes
	if rotated, _ := rotateIfNeeded(path, 100, 3); rotated {
		t.Fatal("rotated a file under the cap")
	}
	for round := range 4 {
		rotated, err := rotateIfNeeded(path, 10, 3)
		if err != nil || !rotated {
			t.Fatalf("round %d: rotate = %v, %v", round, rotated, err)
		}
		if fi, _ := os.Stat(path); fi.Size() != 0 {
			t.Fatalf("round %d: current log is %d bytes after rotation, want 0", round, fi.Size())
		}
		writeLines(t, path, 10*(round+1), 10*(round+1)+3)
	}
	one, _ := os.ReadFile(path + ".1")
	two, _ := os.ReadFile(path + ".2")
	if !strings.HasPrefix(string(one), "line 30\n") || !strings.HasPrefix(string(two), "line 20\n") {
		t.Errorf("rotated files hold %q and %q, want the two newest generations", one, two)
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists; want at most 3 files", path)
	}
	// maxFiles = 1: truncate only.
	p1 := filepath.Join(t.TempDir(), "single.log")
	writeLines(t, p1, 0, 5)
	if rotated, _ := rotateIfNeeded(p1, 1, 1); !rotated {
		t.Fatal("maxFiles=1 did not truncate")
	}
	if _, err := os.Stat(p1 + ".1"); !os.IsNotExist(err) {
		t.Error("maxFiles=1 kept a rotated copy")
	}
}

func TestTailLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "n.log")
	if got := tailLines(path, 5); got != nil {
		t.Errorf("tail of a missing file = %q", got)
	}
	writeLines(t, path+".1", 0, 10)
	writeLines(t, path, 10, 13)
	want := []string{"line 8", "line 9", "line 10", "line 11", "line 12"}
	if got := tailLines(path, 5); !slices.Equal(got, want) {
		t.Errorf("tail = %q, want %q (continuing into .1)", got, want)
	}
	if got := tailLines(path, 0); got != nil {
		t.Errorf("tail 0 = %q", got)
	}
	// A long file: only the last window is read, the cut line is dropped.
	big := filepath.Join(dir, "big.log")
	f, _ := os.Create(big)
	for i := range 20000 {
		fmt.Fprintf(f, "row %05d %s\n", i, strings.Repeat("y", 20))
	}
	f.Close()
	got := tailLines(big, 3)
	if len(got) != 3 || !strings.HasPrefix(got[2], "row 19999 ") || !strings.HasPrefix(got[0], "row 19997 ") {
		t.Errorf("tail of a big file = %q", got)
	}
	// CRLF and no trailing newline.
	crlf := filepath.Join(dir, "crlf.log")
	_ = os.WriteFile(crlf, []byte("a\r\nb\r\nc"), 0o644)
	if got := tailLines(crlf, 2); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("tail of CRLF file = %q", got)
	}
}
