//go:build unix

package config

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/smallfile"
)

// A FIFO named as the config file is refused at once: the agent does not
// hang at start waiting for a writer.
func TestLoadFIFORefused(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "agent-config.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := Load(fifo); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, smallfile.ErrNotRegular) {
			t.Errorf("Load(FIFO) = %v, want a not-a-regular-file error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Load(FIFO) blocked")
	}
}
