//go:build unix

package store

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRestoreAsRootKeepsOwner: `sudo sutra-master restore` must leave files
// the master's service user can open.
func TestRestoreAsRootKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	path, _ := fillDB(t, dir, 5)
	backup := filepath.Join(t.TempDir(), "b.db")
	if _, err := BackupFile(path, backup); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 4242, 4343
	for _, p := range []string{dir, path, markPath(path)} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := Restore(dir, backup, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, markPath(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d after restore, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
}
