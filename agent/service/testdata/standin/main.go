//go:build linux

// Command standin is a stand-in sutra-agent for the real-systemd integration
// test (agent/service/systemd_integration_test.go) until "sutra-agent run" is
// implemented: it is wired exactly as cmd/sutra-agent should be —
// "service ..." goes to agentsvc.Command and "run" to agentsvc.RunAsService —
// and its "run" starts one long-lived child (standing in for a storage node)
// unless the child recorded in /run/sutra-standin/child.pid is still alive,
// in which case it re-adopts it.
//
//	standin service install|...   agentsvc.Command
//	standin run --config F --service
//	standin child                 sleep until killed
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	agentsvc "github.com/sutragrid/sutra/agent/service"
)

const stateDir = "/run/sutra-standin"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: standin service ...|run|child")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "service":
		os.Exit(agentsvc.Command(ctx, os.Args[2:], agentsvc.Options{Stdout: os.Stdout, Stderr: os.Stderr}))
	case "run":
		err := agentsvc.RunAsService(ctx, func(ctx context.Context) error {
			if err := record("interactive", strconv.FormatBool(agentsvc.Interactive())); err != nil {
				return err
			}
			if err := ensureChild(); err != nil {
				return err
			}
			fmt.Fprintln(os.Stderr, "standin: running until stopped")
			<-ctx.Done()
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "standin:", err)
			os.Exit(1)
		}
	case "child":
		<-ctx.Done()
	default:
		os.Exit(2)
	}
}

func record(name, value string) error {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir, name), []byte(value+"\n"), 0o644)
}

// ensureChild re-adopts the recorded child when it is alive, else starts one.
func ensureChild() error {
	if b, err := os.ReadFile(filepath.Join(stateDir, "child.pid")); err == nil {
		pid := strings.TrimSpace(string(b))
		if cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil && strings.HasSuffix(string(cmdline), "child\x00") {
			return record("adopted", pid)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "child")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return record("child.pid", strconv.Itoa(cmd.Process.Pid))
}
