//go:build unix

package smallfile_test

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/smallfile"
)

// A FIFO without a writer is refused at once, not waited on.
func TestReadFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := smallfile.Read(fifo, 10); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, smallfile.ErrNotRegular) {
			t.Errorf("Read(FIFO) = %v, want ErrNotRegular", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read(FIFO without a writer) blocked")
	}
}
