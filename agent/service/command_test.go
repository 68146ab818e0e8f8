package agentsvc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kardianos/service"
)

// fakeManager stands in for the OS service manager (systemd, launchd, the
// Windows SCM), which cannot run inside these tests; the real systemd is
// exercised by TestSystemdIntegration.
type fakeManager struct {
	platform  string
	installed bool
	running   bool
	statusErr error // returned by Status when set
	actionErr error // returned by every action when set
	calls     []string
	cfg       *service.Config
}

func (f *fakeManager) Platform() string { return f.platform }

func (f *fakeManager) Status() (service.Status, error) {
	switch {
	case f.statusErr != nil:
		return service.StatusUnknown, f.statusErr
	case !f.installed:
		return service.StatusUnknown, service.ErrNotInstalled
	case f.running:
		return service.StatusRunning, nil
	}
	return service.StatusStopped, nil
}

func (f *fakeManager) act(name string, apply func()) error {
	f.calls = append(f.calls, name)
	if f.actionErr != nil {
		return f.actionErr
	}
	apply()
	return nil
}

func (f *fakeManager) Install() error   { return f.act("install", func() { f.installed = true }) }
func (f *fakeManager) Uninstall() error { return f.act("uninstall", func() { f.installed = false }) }
func (f *fakeManager) Start() error     { return f.act("start", func() { f.running = true }) }
func (f *fakeManager) Stop() error      { return f.act("stop", func() { f.running = false }) }
func (f *fakeManager) Restart() error   { return f.act("restart", func() { f.running = true }) }

type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs Command against fm as goos, with privilege priv, from a
// working directory holding agent-config.toml.
func runCmd(t *testing.T, fm *fakeManager, goos string, priv bool, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Command(context.Background(), args, Options{
		Stdout:     &out,
		Stderr:     &errOut,
		Executable: "/usr/local/bin/sutra-agent",
		newManager: func(cfg *service.Config) (manager, error) {
			fm.cfg = cfg
			return fm, nil
		},
		privileged: func() bool { return priv },
		goos:       goos,
	})
	return result{code, out.String(), errOut.String()}
}

func chdirWithConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, DefaultConfig), []byte("version = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	return dir
}

func TestStatusWordsAndCodes(t *testing.T) {
	chdirWithConfig(t)
	for _, tc := range []struct {
		name     string
		fm       fakeManager
		word     string
		code     int
		stderrHs string
	}{
		{"running", fakeManager{installed: true, running: true}, "running", 0, ""},
		{"stopped", fakeManager{installed: true}, "stopped", 3, ""},
		{"not installed", fakeManager{}, "not-installed", 4, ""},
		{"systemd failed", fakeManager{statusErr: errors.New("service in failed state")}, "stopped", 3, "journalctl -u sutra-agent"},
		{"unknown", fakeManager{statusErr: errors.New("dbus went away")}, "unknown", 1, "dbus went away"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := tc.fm
			fm.platform = "linux-systemd"
			r := runCmd(t, &fm, "linux", false, "status")
			if r.stdout != tc.word+"\n" || r.code != tc.code {
				t.Errorf("status = %q exit %d, want %q exit %d", r.stdout, r.code, tc.word+"\n", tc.code)
			}
			if !strings.Contains(r.stderr, tc.stderrHs) || (tc.stderrHs == "" && r.stderr != "") {
				t.Errorf("status stderr = %q, want %q", r.stderr, tc.stderrHs)
			}
			if len(fm.calls) != 0 {
				t.Errorf("status called %v, want no action", fm.calls)
			}
		})
	}
}

func TestPermissionDenied(t *testing.T) {
	chdirWithConfig(t)
	for _, goos := range []string{"linux", "darwin", "windows"} {
		for _, action := range []string{"install", "uninstall", "start", "stop", "restart"} {
			fm := &fakeManager{platform: map[string]string{"linux": "linux-systemd", "darwin": "darwin-launchd", "windows": "windows-service"}[goos]}
			r := runCmd(t, fm, goos, false, action)
			want := "sutra-agent: permission denied: rerun as root (sudo sutra-agent service " + action + ")\n"
			if goos == "windows" {
				want = "sutra-agent: permission denied: rerun as Administrator (sutra-agent service " + action + " in an elevated prompt)\n"
			}
			if r.code != ExitError || r.stderr != want || r.stdout != "" {
				t.Errorf("%s %s unprivileged = exit %d stderr %q stdout %q, want exit 1 stderr %q", goos, action, r.code, r.stderr, r.stdout, want)
			}
			if len(fm.calls) != 0 {
				t.Errorf("%s %s unprivileged called %v, want nothing", goos, action, fm.calls)
			}
		}
	}
	// The service manager refusing (e.g. polkit) reads the same.
	fm := &fakeManager{platform: "linux-systemd", installed: true, actionErr: errors.New(`"systemctl" failed: exit status 1, Failed to start sutra-agent.service: Access denied`)}
	r := runCmd(t, fm, "linux", true, "start")
	if want := "sutra-agent: permission denied: rerun as root (sudo sutra-agent service start)\n"; r.stderr != want {
		t.Errorf("start refused by systemd: stderr %q, want %q", r.stderr, want)
	}
}

func TestInstallStoresAbsoluteConfig(t *testing.T) {
	dir := chdirWithConfig(t)
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "a.toml"), []byte("version = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install"}, filepath.Join(dir, DefaultConfig)},
		{[]string{"install", "--config", "etc/a.toml"}, filepath.Join(dir, "etc", "a.toml")},
		{[]string{"install", "--config=" + filepath.Join(dir, "etc", "a.toml")}, filepath.Join(dir, "etc", "a.toml")},
	} {
		fm := &fakeManager{platform: "linux-systemd"}
		r := runCmd(t, fm, "linux", true, tc.args...)
		if r.code != 0 {
			t.Fatalf("%v = exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
		wantArgs := []string{"run", "--config", tc.want, "--service"}
		if !slices.Equal(fm.cfg.Arguments, wantArgs) {
			t.Errorf("%v: service arguments %q, want %q", tc.args, fm.cfg.Arguments, wantArgs)
		}
		unit, _ := fm.cfg.Option["SystemdScript"].(string)
		if !strings.Contains(unit, "ExecStart=/usr/local/bin/sutra-agent run --config "+tc.want+" --service\n") {
			t.Errorf("%v: unit ExecStart does not run %s:\n%s", tc.args, tc.want, unit)
		}
		if !slices.Equal(fm.calls, []string{"install"}) || !strings.HasPrefix(r.stdout, "installed sutra-agent") {
			t.Errorf("%v: calls %v stdout %q, want one install", tc.args, fm.calls, r.stdout)
		}
	}
}

func TestInstallRefusals(t *testing.T) {
	dir := chdirWithConfig(t)
	for _, tc := range []struct {
		name  string
		fm    fakeManager
		args  []string
		check func(string) error
		want  string
	}{
		{"missing config", fakeManager{}, []string{"install", "--config", "nope.toml"}, nil,
			"sutra-agent: service install: config " + filepath.Join(dir, "nope.toml") + " does not exist: write one (see configs/agent-config.toml) or pass --config FILE\n"},
		{"config is a dir", fakeManager{}, []string{"install", "--config", dir}, nil, "is not a regular file"},
		{"bad config", fakeManager{}, []string{"install"}, func(string) error { return errors.New("line 3: unknown key \"mastr\"") }, `line 3: unknown key "mastr"`},
		{"already installed", fakeManager{installed: true}, []string{"install"}, nil, `sutra-agent is already installed (stopped): run "sutra-agent service uninstall" first`},
		{"not systemd", fakeManager{platform: "linux-sysv"}, []string{"install"}, nil, "init system is linux-sysv; only systemd is supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := tc.fm
			if fm.platform == "" {
				fm.platform = "linux-systemd"
			}
			var out, errOut bytes.Buffer
			code := Command(context.Background(), tc.args, Options{
				Stdout: &out, Stderr: &errOut, Executable: "/usr/local/bin/sutra-agent", CheckConfig: tc.check,
				newManager: func(*service.Config) (manager, error) { return &fm, nil },
				privileged: func() bool { return true }, goos: "linux",
			})
			if code != ExitError || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("%v = exit %d stderr %q, want exit 1 and %q", tc.args, code, errOut.String(), tc.want)
			}
			if strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("stderr %q, want one line", errOut.String())
			}
			if slices.Contains(fm.calls, "install") {
				t.Errorf("install called despite %s", tc.name)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	chdirWithConfig(t)
	fm := &fakeManager{platform: "linux-systemd"}
	steps := []struct {
		args      []string
		code      int
		stdout    string
		calls     []string
		installed bool
		running   bool
	}{
		{[]string{"start"}, 1, "", nil, false, false},
		{[]string{"install"}, 0, "", []string{"install"}, true, false},
		{[]string{"status"}, 3, "stopped\n", nil, true, false},
		{[]string{"stop"}, 0, "sutra-agent is already stopped\n", nil, true, false},
		{[]string{"start"}, 0, "started sutra-agent\n", []string{"start"}, true, true},
		{[]string{"start"}, 0, "sutra-agent is already running\n", nil, true, true},
		{[]string{"status"}, 0, "running\n", nil, true, true},
		{[]string{"restart"}, 0, "restarted sutra-agent\n", []string{"restart"}, true, true},
		{[]string{"stop"}, 0, "stopped sutra-agent\n", []string{"stop"}, true, false},
		{[]string{"restart"}, 0, "restarted sutra-agent\n", []string{"start"}, true, true},
		// Uninstall stops a running agent first.
		{[]string{"uninstall"}, 0, "uninstalled sutra-agent\n", []string{"stop", "uninstall"}, false, false},
		{[]string{"uninstall"}, 0, "sutra-agent is not installed\n", nil, false, false},
		{[]string{"status"}, 4, "not-installed\n", nil, false, false},
	}
	for _, s := range steps {
		fm.calls = nil
		r := runCmd(t, fm, "linux", true, s.args...)
		if r.code != s.code || (s.stdout != "" && r.stdout != s.stdout) {
			t.Fatalf("%v = exit %d stdout %q stderr %q, want exit %d stdout %q", s.args, r.code, r.stdout, r.stderr, s.code, s.stdout)
		}
		if !slices.Equal(fm.calls, s.calls) || fm.installed != s.installed || fm.running != s.running {
			t.Fatalf("%v: calls %v installed %v running %v, want %v %v %v", s.args, fm.calls, fm.installed, fm.running, s.calls, s.installed, s.running)
		}
	}
}

func TestUsage(t *testing.T) {
	fm := &fakeManager{platform: "linux-systemd"}
	for _, tc := range []struct {
		args   []string
		code   int
		stdout bool // usage on stdout (asked for) rather than stderr
	}{
		{nil, 2, false},
		{[]string{"help"}, 0, true},
		{[]string{"--help"}, 0, true},
		{[]string{"status", "-h"}, 0, true},
		{[]string{"frobnicate"}, 2, false},
		{[]string{"start", "extra"}, 2, false},
		{[]string{"install", "--bogus"}, 2, false},
	} {
		r := runCmd(t, fm, "linux", true, tc.args...)
		got := r.stderr
		if tc.stdout {
			got = r.stdout
		}
		if r.code != tc.code || !strings.Contains(got, "status      print one word") {
			t.Errorf("%q = exit %d, stdout %q stderr %q; want exit %d with usage on the right stream", tc.args, r.code, r.stdout, r.stderr, tc.code)
		}
	}
	if len(fm.calls) != 0 {
		t.Errorf("usage errors called %v", fm.calls)
	}
}
