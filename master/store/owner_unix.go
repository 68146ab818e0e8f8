//go:build unix

package store

import (
	"os"
	"syscall"
)

// chownLike gives path the owner of ref when running as root, so that a
// `sutra-master restore` or `accept-db` run with sudo leaves files the
// master's service user can still open. Elsewhere it does nothing.
func chownLike(path, ref string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(ref)
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		_ = os.Lchown(path, int(st.Uid), int(st.Gid))
	}
}
