package agentsvc

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ and packaging/systemd/")

// Definitions rendered by the golden tests: a plain install, and paths that
// need quoting and escaping in each format.
var goldenDefs = []struct {
	name string
	goos string
	def  Definition
}{
	{"systemd", "linux", Definition{Executable: "/usr/local/bin/sutra-agent", ConfigPath: "/etc/sutra/agent-config.toml"}},
	{"systemd-quoting", "linux", Definition{Executable: "/opt/Sutra Grid/sutra-agent", ConfigPath: `/etc/sutra/100% "agent" $HOME\x.toml`}},
	{"launchd", "darwin", Definition{Executable: "/usr/local/bin/sutra-agent", ConfigPath: "/usr/local/etc/sutra/agent-config.toml"}},
	{"launchd-escaping", "darwin", Definition{Executable: "/Applications/Sutra & Grid/sutra-agent", ConfigPath: "/Users/o'brien/<agent>.toml", LogDir: "/Library/Logs/Sutra"}},
	{"windows", "windows", Definition{Executable: `C:\Program Files\Sutra\sutra-agent.exe`, ConfigPath: `C:\ProgramData\Sutra\agent-config.toml`}},
	{"windows-quoting", "windows", Definition{Executable: `C:\sutra\sutra-agent.exe`, ConfigPath: `C:\Data Dir\say "hi"\`}},
}

// renderFor returns the definition kardianos writes (systemd, launchd) or the
// settings it applies (windows) for goos.
func renderFor(t *testing.T, goos string, d Definition) string {
	t.Helper()
	if goos == "windows" {
		out, err := describeWindows(d)
		if err != nil {
			t.Fatalf("describeWindows: %v", err)
		}
		return out
	}
	cfg, err := kardianosConfig(goos, d)
	if err != nil {
		t.Fatalf("kardianosConfig(%s): %v", goos, err)
	}
	key := map[string]string{"linux": "SystemdScript", "darwin": "LaunchdConfig"}[goos]
	out, ok := cfg.Option[key].(string)
	if !ok || out == "" {
		t.Fatalf("kardianosConfig(%s).Option[%s] = %v, want the rendered definition", goos, key, cfg.Option[key])
	}
	return out
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenDefs {
		t.Run(tc.name, func(t *testing.T) {
			got := renderFor(t, tc.goos, tc.def)
			golden(t, filepath.Join("testdata", tc.name+".golden"), got)
		})
	}
}

// The unit the .deb/.rpm packages install is the template rendered for the
// package layout, byte for byte.
func TestPackagedUnitMatchesTemplate(t *testing.T) {
	got, err := renderSystemd(Definition{Executable: "/usr/bin/sutra-agent", ConfigPath: "/etc/sutra/agent-config.toml"})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("..", "..", "packaging", "systemd", "sutra-agent.service"), got)
}

func TestSystemdUnitPolicy(t *testing.T) {
	unit := renderFor(t, "linux", goldenDefs[0].def)
	section := ""
	seen := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			seen[section+k] = v
		}
	}
	want := map[string]string{
		"[Unit]StartLimitIntervalSec": "120",
		"[Unit]StartLimitBurst":       "10",
		"[Unit]After":                 "network-online.target",
		"[Unit]Wants":                 "network-online.target",
		"[Service]Restart":            "always",
		"[Service]RestartSec":         "2",
		"[Service]KillMode":           "process",
		"[Service]ExecStart":          "/usr/local/bin/sutra-agent run --config /etc/sutra/agent-config.toml --service",
		"[Service]ExecStartPre":       "-/usr/local/bin/sutra-agent.previous upgrade-check --config /etc/sutra/agent-config.toml",
		"[Install]WantedBy":           "multi-user.target",
	}
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("unit %s = %q, want %q", k, seen[k], v)
		}
	}
	// Start limits in [Service] are ignored by current systemd.
	for _, k := range []string{"StartLimitIntervalSec", "StartLimitBurst", "StartLimitInterval"} {
		if _, ok := seen["[Service]"+k]; ok {
			t.Errorf("unit has %s in [Service], want it in [Unit] only", k)
		}
	}
}

func TestLaunchdPlistPolicy(t *testing.T) {
	plist := renderFor(t, "darwin", goldenDefs[2].def)
	for _, want := range []string{
		"<key>KeepAlive</key>\n\t<true/>",
		"<key>RunAtLoad</key>\n\t<true/>",
		"<key>AbandonProcessGroup</key>\n\t<true/>",
		"<key>ThrottleInterval</key>\n\t<integer>2</integer>",
		"<string>/usr/local/etc/sutra/agent-config.toml</string>\n\t\t<string>--service</string>",
	} {
		if !strings.Contains(plist, want) {
			t.Errorf("plist lacks %q", want)
		}
	}
}

func TestWindowsRecoveryOptions(t *testing.T) {
	cfg, err := kardianosConfig("windows", goldenDefs[4].def)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"OnFailure":              "restart",
		"OnFailureDelayDuration": "2s",
		"OnFailureResetPeriod":   86400,
		"StartType":              "automatic",
	}
	for k, v := range want {
		if cfg.Option[k] != v {
			t.Errorf("windows Option[%s] = %v, want %v", k, cfg.Option[k], v)
		}
	}
}

func TestDefinitionValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  Definition
		want []string // substrings of the error, all reported at once
	}{
		{"empty", Definition{}, []string{"executable is empty", "config path is empty"}},
		{"relative", Definition{Executable: "sutra-agent", ConfigPath: "agent.toml"}, []string{`executable "sutra-agent" is not an absolute`, `config path "agent.toml" is not an absolute`}},
		{"newline", Definition{Executable: "/bin/a\nb", ConfigPath: "/c"}, []string{"line break"}},
		{"template", Definition{Executable: "/bin/a", ConfigPath: "/{{c}}"}, []string{`contains "{{"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.def.Validate()
			if err == nil {
				t.Fatalf("Validate(%+v) = nil, want errors %q", tc.def, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate(%+v) = %q, want it to contain %q", tc.def, err, w)
				}
			}
			for _, goos := range []string{"linux", "darwin", "windows"} {
				if _, err := kardianosConfig(goos, tc.def); err == nil {
					t.Errorf("kardianosConfig(%s, %+v) = nil error, want one", goos, tc.def)
				}
			}
		})
	}
}

func TestEscapeArgMatchesWindows(t *testing.T) {
	// Expected values from syscall.EscapeArg on Windows.
	for in, want := range map[string]string{
		``:                 `""`,
		`plain`:            `plain`,
		`C:\dir\x.toml`:    `C:\dir\x.toml`,
		`C:\Program Files`: `"C:\Program Files"`,
		`a"b`:              `a\"b`,
		`C:\a b\`:          `"C:\a b\\"`,
		`C:\a b\"c`:        `"C:\a b\\\"c"`,
		"tab\there":        "\"tab\there\"",
	} {
		if got := escapeArg(in); got != want {
			t.Errorf("escapeArg(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzSystemdQuote(f *testing.F) {
	for _, s := range []string{"", "/usr/bin/x", "a b", `"q"`, `back\slash`, "100%", "$HOME", ";", "tab\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := systemdQuote(s)
		if strings.ContainsAny(s, "\x00\r\n") {
			if err == nil {
				t.Fatalf("systemdQuote(%q) = %q, want an error", s, q)
			}
			return
		}
		if err != nil {
			t.Fatalf("systemdQuote(%q): %v", s, err)
		}
		if got := unquoteSystemd(t, q); got != s {
			t.Fatalf("systemdQuote(%q) = %q, which systemd reads as %q", s, q, got)
		}
	})
}

// unquoteSystemd reads one ExecStart word the way systemd does (for the
// quoting systemdQuote produces): optional double quotes with \\ and \"
// escapes, then %% -> % and $$ -> $.
func unquoteSystemd(t *testing.T, w string) string {
	t.Helper()
	if strings.HasPrefix(w, `"`) {
		if len(w) < 2 || !strings.HasSuffix(w, `"`) {
			t.Fatalf("unbalanced quotes in %q", w)
		}
		var b strings.Builder
		in := w[1 : len(w)-1]
		for i := 0; i < len(in); i++ {
			if in[i] == '\\' {
				i++
				if i == len(in) {
					t.Fatalf("dangling backslash in %q", w)
				}
			} else if in[i] == '"' {
				t.Fatalf("unescaped quote in %q", w)
			}
			b.WriteByte(in[i])
		}
		w = b.String()
	} else if strings.ContainsAny(w, " \t\"'\\") || w == "" {
		t.Fatalf("unquoted word %q needs quotes", w)
	}
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if (w[i] == '%' || w[i] == '$') && i+1 < len(w) && w[i+1] == w[i] {
			i++
		} else if w[i] == '%' || w[i] == '$' {
			t.Fatalf("lone %c in %q", w[i], w)
		}
		b.WriteByte(w[i])
	}
	return b.String()
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test -run %s -update rewrites it): %v", t.Name(), err)
	}
	if got != string(want) {
		t.Errorf("rendered output differs from %s (go test -update rewrites it after review)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}
