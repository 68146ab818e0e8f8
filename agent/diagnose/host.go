package diagnose

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/version"
)

// HostReport describes the machine and this build.
type HostReport struct {
	Hostname     string     `json:"hostname"`
	OS           string     `json:"os"`
	Arch         string     `json:"arch"`
	Platform     string     `json:"platform"` // the artifact naming: linux-x86_64 …
	AgentVersion string     `json:"agent_version"`
	GoVersion    string     `json:"go_version"`
	Disks        []DiskFree `json:"disks"`
}

// DiskFree is the free space where a directory lives.
type DiskFree struct {
	Dir        string `json:"dir"`
	Role       string `json:"role"`
	FreeBytes  uint64 `json:"free_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
	Error      string `json:"error,omitempty"`
}

func hostReport(r *Report, cfg *config.Config) HostReport {
	h := HostReport{OS: runtime.GOOS, Arch: runtime.GOARCH, AgentVersion: version.Version, GoVersion: runtime.Version()}
	h.Hostname, _ = os.Hostname()
	if p, a, err := platform.Current(); err == nil {
		h.Platform = p + "-" + a
	} else {
		r.problem("platform: %v", err)
	}
	for _, d := range []struct{ role, dir string }{
		{"cache_dir", cfg.Agent.CacheDir},
		{"agent_data_dir", cfg.Agent.AgentDataDir},
		{"data_path", cfg.Storage.DataPath},
	} {
		df := DiskFree{Dir: d.dir, Role: d.role}
		dir := existingParent(d.dir)
		free, total, err := diskFree(dir)
		if err != nil {
			df.Error = err.Error()
			r.warn("disk free of %s %s: %v", d.role, d.dir, err)
		} else {
			df.FreeBytes, df.TotalBytes = free, total
			if free < MinFreeBytes {
				r.problem("only %s free on the file system of %s %s", humanBytes(free), d.role, d.dir)
			}
		}
		h.Disks = append(h.Disks, df)
	}
	return h
}

// existingParent is dir, or its nearest existing ancestor (a directory
// not created yet lives on its parent's file system).
func existingParent(dir string) string {
	for d := dir; ; {
		if _, err := os.Stat(d); err == nil {
			return d
		}
		p := filepath.Dir(d)
		if p == d {
			return d
		}
		d = p
	}
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ServiceReport is the OS service manager's view of the agent.
type ServiceReport struct {
	// State is running, stopped, not-installed, unknown, or "not checked".
	State string `json:"state"`
	// Systemd is `systemctl show sutra-agent -p ActiveState,SubState,NRestarts,ExecMainStatus`.
	Systemd map[string]string `json:"systemd,omitempty"`
	Error   string            `json:"error,omitempty"`
}

func serviceReport(ctx context.Context, opts Options) ServiceReport {
	s := ServiceReport{State: "not checked"}
	if opts.ServiceStatus != nil {
		st, err := withTimeout(ctx, opts.Timeout, opts.ServiceStatus)
		s.State = st
		if err != nil {
			s.Error = err.Error()
			if st == "" {
				s.State = "unknown"
			}
		}
	}
	show := opts.Systemctl
	if show == nil && runtime.GOOS == "linux" {
		if _, err := exec.LookPath("systemctl"); err == nil {
			show = systemctlShow
		}
	}
	if show != nil {
		out, err := withTimeout(ctx, opts.Timeout, show)
		if err == nil {
			s.Systemd = map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
					s.Systemd[k] = v
				}
			}
		}
	}
	return s
}

func systemctlShow(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "systemctl", "show", "sutra-agent", "-p", "ActiveState,SubState,NRestarts,ExecMainStatus", "--no-pager").Output()
	return string(out), err
}

// withTimeout runs fn with a deadline and gives up on it (leaving it to
// finish in the background) when it does not honour the deadline.
func withTimeout(ctx context.Context, d time.Duration, fn func(context.Context) (string, error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := fn(ctx)
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("no answer within %s", d)
	}
}
