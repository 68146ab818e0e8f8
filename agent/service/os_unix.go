//go:build !windows

package agentsvc

import "os"

// privileged reports whether this process may install and control system
// services: root.
func privileged() bool { return os.Geteuid() == 0 }

// afterInstall completes an install; nothing to add on Unix.
func afterInstall() error { return nil }
