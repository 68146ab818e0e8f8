//go:build darwin || freebsd || netbsd || ios

package catalog

import "syscall"

func ctime(st *syscall.Stat_t) int64 { return st.Ctimespec.Nano() }
