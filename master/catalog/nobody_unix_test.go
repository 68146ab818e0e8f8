//go:build unix

package catalog

import (
	"os/exec"
	"syscall"
)

func setNobody(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
}
