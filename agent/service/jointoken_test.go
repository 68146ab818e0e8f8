package agentsvc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kardianos/service"

	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/internal/jointoken"
)

// runInstall runs "service install ARGS" as root on a fake systemd whose
// agent_data_dir is data, with environment env.
func runInstall(t *testing.T, fm *fakeManager, data string, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Command(context.Background(), append([]string{"install"}, args...), Options{
		Stdout: &out, Stderr: &errOut, Executable: "/usr/local/bin/sutra-agent",
		AgentDataDir: func(string) (string, error) { return data, nil },
		Getenv:       func(k string) string { return env[k] },
		newManager:   func(cfg *service.Config) (manager, error) { fm.cfg = cfg; return fm, nil },
		privileged:   func() bool { return true },
		goos:         "linux",
	})
	return result{code, out.String(), errOut.String()}
}

func newToken(t *testing.T) string {
	t.Helper()
	tok, err := jointoken.Generate(strings.Repeat("0f", 32))
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// Zero-touch: install --join-token (or --join-token-file, or
// SUTRA_JOIN_TOKEN) stores the token 0600 in {agent_data_dir}/join-token,
// where the agent reads it, and nowhere in the service definition or the
// output; the config is untouched.
func TestInstallStoresTheJoinToken(t *testing.T) {
	for _, how := range []string{"flag", "file", "env"} {
		t.Run(how, func(t *testing.T) {
			dir := chdirWithConfig(t)
			tok := newToken(t)
			data := filepath.Join(t.TempDir(), "agent")
			var args []string
			env := map[string]string{}
			switch how {
			case "flag":
				args = []string{"--join-token", tok}
			case "file":
				f := filepath.Join(t.TempDir(), "tok")
				if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				args = []string{"--join-token-file", f}
			case "env":
				env[EnvJoinToken] = tok
			}
			fm := &fakeManager{platform: "linux-systemd"}
			r := runInstall(t, fm, data, env, args...)
			if r.code != ExitOK || !fm.installed {
				t.Fatalf("install = %d (%s%s)", r.code, r.stdout, r.stderr)
			}
			path := filepath.Join(data, controlplane.JoinTokenFile)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", path, fi.Mode().Perm())
			}
			got, err := controlplane.ReadJoinTokenFile(path)
			if err != nil || got != tok {
				t.Fatalf("the agent reads %v from the token file, want the token", err)
			}
			if !strings.Contains(r.stdout, path) {
				t.Errorf("install output does not say where the token is:\n%s", r.stdout)
			}
			secret := tok[strings.LastIndex(tok, ".")+1:]
			def := strings.Join(fm.cfg.Arguments, " ") + " " + fm.cfg.Executable
			for k, v := range fm.cfg.Option {
				def += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(toString(v), "\n", " "), "\t", " "))
			}
			for _, s := range []string{r.stdout, r.stderr, def} {
				if strings.Contains(s, secret) {
					t.Errorf("the token's secret leaked into the output or the service definition: %s", s)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(dir, DefaultConfig)); string(b) != "version = 1\n" {
				t.Errorf("the config was rewritten: %q", b)
			}
		})
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// Bad join tokens are usage errors that do not quote the token, nothing is
// installed or stored; the flags belong to install only.
func TestInstallJoinTokenErrors(t *testing.T) {
	chdirWithConfig(t)
	data := filepath.Join(t.TempDir(), "agent")
	tok := newToken(t)
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"malformed", []string{"--join-token", "SUTRA1.abc.def.topsecretvalue"}, nil, "--join-token: malformed join token"},
		{"malformed env", nil, map[string]string{EnvJoinToken: "nope-topsecretvalue"}, "SUTRA_JOIN_TOKEN: malformed"},
		{"missing file", []string{"--join-token-file", filepath.Join(data, "none")}, nil, "--join-token-file"},
		{"big file", []string{"--join-token-file", big}, nil, "larger than"},
		{"both", []string{"--join-token", tok, "--join-token-file", big}, nil, "not both"},
	} {
		fm := &fakeManager{platform: "linux-systemd"}
		r := runInstall(t, fm, data, c.env, c.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, "topsecretvalue") || fm.installed {
			t.Errorf("%s: code %d installed %v stderr %q, want usage error with %q", c.name, r.code, fm.installed, r.stderr, c.want)
		}
		if _, err := os.Stat(filepath.Join(data, controlplane.JoinTokenFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a token file was written", c.name)
		}
	}
	fm := &fakeManager{platform: "linux-systemd", installed: true}
	if r := runCmd(t, fm, "linux", true, "start", "--join-token", tok); r.code != ExitUsage || !strings.Contains(r.stderr, "install only") {
		t.Errorf("start --join-token = %d %q, want usage error", r.code, r.stderr)
	}
	// A failed install leaves no token behind.
	fm = &fakeManager{platform: "linux-systemd", actionErr: errors.New("systemctl failed")}
	if r := runInstall(t, fm, data, nil, "--join-token", tok); r.code != ExitError {
		t.Errorf("install with a failing service manager = %d", r.code)
	}
	if _, err := os.Stat(filepath.Join(data, controlplane.JoinTokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed install left the join token file behind")
	}
	if !strings.Contains(Usage, "--join-token") || !strings.Contains(Usage, "--join-token-file") {
		t.Error("Usage does not document --join-token and --join-token-file")
	}
}

// FuzzJoinTokenArg: whatever the flag, file or environment holds, install
// either refuses it without quoting it or stores a token that parses.
func FuzzJoinTokenArg(f *testing.F) {
	tok, _ := jointoken.Generate(strings.Repeat("0f", 32))
	for _, s := range []string{tok.String(), tok.String() + "\n", "\t" + tok.String() + " \r\n", "", "\x00", "SUTRA1....", "SUTRA1." + strings.Repeat("g", 64) + ".x.y", strings.Repeat("A", 5000), tok.String() + " " + tok.String()} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, s string, how uint8) {
		var flagTok, file string
		env := map[string]string{}
		switch how % 3 {
		case 0:
			flagTok = s
		case 1:
			file = filepath.Join(t.TempDir(), "tok")
			if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		case 2:
			env[EnvJoinToken] = s
		}
		got, err := joinTokenArg(flagTok, file, func(k string) string { return env[k] })
		if err != nil {
			if len(s) >= 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("the error quotes the input: %v", err)
			}
			return
		}
		if got == "" {
			return
		}
		if _, perr := jointoken.Parse(got); perr != nil {
			t.Fatalf("accepted %q, which does not parse: %v", got, perr)
		}
	})
}
