package release

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

func TestReadKeysFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keys, err := ReadKeysFile(write("ok.pub", "untrusted comment: minisign public key\n# rotation\n\nRWkey1\n  RWkey2  \n"))
	if err != nil || len(keys) != 2 || keys[0] != "RWkey1" || keys[1] != "RWkey2" {
		t.Fatalf("keys %q, %v", keys, err)
	}
	for name, content := range map[string]string{"empty.pub": "# nothing\n", "huge.pub": strings.Repeat("x", MaxKeysFile+1)} {
		if _, err := ReadKeysFile(write(name, content)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := ReadKeysFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file accepted")
	}
	if _, err := ReadKeysFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if runtime.GOOS != "windows" {
		fifo := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skip(err)
		}
		if _, err := ReadKeysFile(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("a FIFO: %v", err)
		}
	}
}
