//go:build unix

package supervisor

import "syscall"

var errESRCH error = syscall.ESRCH
