package smallfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sutragrid/sutra/internal/smallfile"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.pem")
	if err := os.WriteFile(ok, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := smallfile.Read(ok, 5); err != nil || string(b) != "hello" {
		t.Fatalf("Read(5 bytes, max 5) = %q, %v", b, err)
	}
	if _, err := smallfile.Read(ok, 4); !errors.Is(err, smallfile.ErrTooLarge) {
		t.Errorf("Read(5 bytes, max 4) = %v, want ErrTooLarge", err)
	}
	if _, err := smallfile.Read(dir, 1<<20); !errors.Is(err, smallfile.ErrNotRegular) {
		t.Errorf("Read(directory) = %v, want ErrNotRegular", err)
	}
	if _, err := smallfile.Read(filepath.Join(dir, "missing"), 10); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(missing) = %v, want not exist", err)
	}
}
