//go:build linux

package testproc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testproc"
)

// TestProcLifecycle: a child's output lands in its log; Terminate stops a
// process that honours SIGTERM; Kill stops one that ignores it, and its
// whole process group.
func TestProcLifecycle(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "out.log")
	p := testproc.Start(t, "echo", "/bin/sh", []string{"-c", "echo one; echo two; echo ready; exec sleep 60"}, nil, log)
	testproc.WaitFor(t, 10*time.Second, "ready", func() (bool, string) {
		return testproc.CountLines(log, "ready") == 1, testproc.Tail(log, 1)
	})
	if got := testproc.Tail(log, 2); got != "two\nready" {
		t.Errorf("Tail(2) = %q", got)
	}
	if p.Exited() {
		t.Fatal("Exited() before any signal")
	}
	p.Terminate(t, 5*time.Second)
	if !p.Exited() {
		t.Fatal("not exited after Terminate")
	}

	stubborn := testproc.Start(t, "stubborn", "/bin/sh", []string{"-c", "trap '' TERM; sleep 60 & echo $! > " + filepath.Join(dir, "child") + "; wait"}, nil, log)
	testproc.WaitFor(t, 10*time.Second, "child pid", func() (bool, string) {
		_, err := os.Stat(filepath.Join(dir, "child"))
		return err == nil, "no pid file"
	})
	stubborn.Kill()
	b, _ := os.ReadFile(filepath.Join(dir, "child"))
	pid := strings.TrimSpace(string(b))
	testproc.WaitFor(t, 5*time.Second, "the group's child gone", func() (bool, string) {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		return err != nil || strings.Contains(string(st), ") Z "), string(st)
	})
	if testproc.FreePort(t) <= 0 {
		t.Error("FreePort <= 0")
	}
	if got := testproc.Tail(filepath.Join(dir, "missing"), 3); !strings.Contains(got, "no such file") {
		t.Errorf("Tail of a missing file = %q", got)
	}
}
