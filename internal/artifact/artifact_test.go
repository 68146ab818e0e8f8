package artifact

import (
	"errors"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/semver"
)

func TestParseFilenameValid(t *testing.T) {
	tests := []struct {
		in   string
		want Name
	}{
		{"storage-server-1.0.0-linux-x86_64", Name{StorageServer, "1.0.0", "linux", "x86_64", ""}},
		{"storage-server-1.0.0-darwin-aarch64", Name{StorageServer, "1.0.0", "darwin", "aarch64", ""}},
		{"storage-server-1.0.0-windows-x86_64", Name{StorageServer, "1.0.0", "windows", "x86_64", ""}},
		{"storage-server-1.0.0-windows-x86_64.exe", Name{StorageServer, "1.0.0", "windows", "x86_64", ".exe"}},
		{"storage-server-2.0.0-linux-aarch64", Name{StorageServer, "2.0.0", "linux", "aarch64", ""}},
		{"storage-server-2.1.0-rc.1-linux-arm", Name{StorageServer, "2.1.0-rc.1", "linux", "arm", ""}},
		{"storage-server-2.1.0-rc-1-linux-x86", Name{StorageServer, "2.1.0-rc-1", "linux", "x86", ""}},
		{"storage-server-1.10.0+build.7-linux-x86_64", Name{StorageServer, "1.10.0+build.7", "linux", "x86_64", ""}},
		{"sutra-agent-0.3.1-darwin-x86_64", Name{Agent, "0.3.1", "darwin", "x86_64", ""}},
		{"sutra-agent-0.3.1-windows-aarch64.exe", Name{Agent, "0.3.1", "windows", "aarch64", ".exe"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFilename(tt.in)
			if err != nil {
				t.Fatalf("ParseFilename(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseFilename(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("ParseFilename(%q).String() = %q, want the input back", tt.in, got.String())
			}
		})
	}
}

func TestParseFilenameInvalid(t *testing.T) {
	tests := []struct {
		in, reason string // reason: a substring the error must contain
	}{
		// The design document's troubleshooting examples.
		{"storage-server-v1.0.0-linux-x86_64", `leading "v": use "1.0.0"`},
		{"storage_server-1.0.0-linux-x86_64", "underscore instead of dash"},
		{"storage-server-linux-x86_64", "missing version"},
		// More mistakes an operator makes.
		{"", "empty name"},
		{"storage-server", "unknown artifact"},
		{"storage-server-", "missing platform and arch"},
		{"storage-server-1.0.0", "missing platform and arch"},
		{"storage-server-1.0.0-linux", `missing arch after platform "linux"`},
		{"storage-server-1.0.0-x86_64", "missing platform"},
		{"storage-server-2.1.0-rc.1-x86_64", "missing platform"},
		{"storage-server-1.0.0-freebsd-x86_64", `unknown platform "freebsd"`},
		{"storage-server-1.0.0-macos-aarch64", `use "darwin"`},
		{"storage-server-1.0.0-linux-amd64", `unknown arch "amd64" (use "x86_64")`},
		{"storage-server-1.0.0-linux-arm64", `use "aarch64"`},
		{"storage-server-1.0.0-linux-riscv64", `unknown arch "riscv64"`},
		{"storage-server-1.0-linux-x86_64", "want MAJOR.MINOR.PATCH"},
		{"storage-server-01.0.0-linux-x86_64", "leading zero"},
		{"storage-server--linux-x86_64", "missing version"},
		{"storage-server-1.0.0-linux-x86_64.exe", ".exe suffix is only for windows"},
		{"storage-server-1.0.0-windows-x86_64.EXE", "unknown arch"},
		{"Storage-Server-1.0.0-linux-x86_64", "lower case"},
		{"nginx-1.0.0-linux-x86_64", "unknown artifact"},
		{"sutra_agent-1.0.0-linux-x86_64", "underscore instead of dash"},
		{"storage-server-1.0.0-linux-x86_64/..", "path separator"},
		{`storage-server-1.0.0-linux-x86_64\x`, "path separator"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseFilename(tt.in)
			if err == nil {
				t.Fatalf("ParseFilename(%q) succeeded, want an error containing %q", tt.in, tt.reason)
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("ParseFilename(%q) error %v does not wrap ErrInvalidName", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("ParseFilename(%q) = %q, want the reason %q", tt.in, err, tt.reason)
			}
		})
	}
}

func TestFilename(t *testing.T) {
	if got, want := Filename(StorageServer, "1.0.0", "linux", "x86_64"), "storage-server-1.0.0-linux-x86_64"; got != want {
		t.Errorf("Filename = %q, want %q", got, want)
	}
	for _, a := range Artifacts() {
		for _, p := range platform.Platforms() {
			for _, arch := range platform.Arches() {
				name := Filename(a, "2.1.0-rc.1", p, arch)
				n, err := ParseFilename(name)
				if err != nil {
					t.Fatalf("ParseFilename(Filename(...)) = %v for %q", err, name)
				}
				if n.Artifact != a || n.Platform != p || n.Arch != arch || n.Version != "2.1.0-rc.1" {
					t.Errorf("round trip of %q = %+v", name, n)
				}
			}
		}
	}
}

func TestIgnored(t *testing.T) {
	for name, want := range map[string]bool{
		".hidden":                                    true,
		".storage-server-1.0.0-linux-x86_64.swp":     true,
		"storage-server-1.0.0-linux-x86_64.partial":  true,
		"storage-server-1.0.0-linux-x86_64.tmp":      true,
		"storage-server-1.0.0-linux-x86_64":          false,
		"storage_server-1.0.0-linux-x86_64":          false, // skipped with a reason, not silently
		"README.md":                                  false,
		"storage-server-1.0.0-windows-x86_64.exe":    false,
		"storage-server-1.0.0-linux-x86_64.partialx": false,
	} {
		if got := Ignored(name); got != want {
			t.Errorf("Ignored(%q) = %v, want %v", name, got, want)
		}
	}
}

func FuzzParseFilename(f *testing.F) {
	for _, s := range []string{
		"storage-server-1.0.0-linux-x86_64", "storage-server-2.1.0-rc.1-windows-aarch64.exe",
		"sutra-agent-1.0.0+b.1-darwin-arm", "storage-server-v1.0.0-linux-x86_64", "storage_server-1.0.0-linux-x86_64",
		"storage-server-linux-x86_64", "storage-server--", "storage-server-1.0.0-linux-x86_64.exe", "",
		"storage-server-1.0.0-windows-x86_64.exe.exe", "sutra-agent-0.0.0-0-linux-x86",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseFilename(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ParseFilename(%q) error %v does not wrap ErrInvalidName", s, err)
			}
			return
		}
		if n.String() != s {
			t.Fatalf("ParseFilename(%q).String() = %q", s, n.String())
		}
		if !Valid(n.Artifact) || !platform.ValidPlatform(n.Platform) || !platform.ValidArch(n.Arch) {
			t.Fatalf("ParseFilename(%q) accepted %+v", s, n)
		}
		if _, err := semver.Parse(n.Version); err != nil {
			t.Fatalf("ParseFilename(%q) accepted version %q: %v", s, n.Version, err)
		}
		if n.Ext != "" && (n.Ext != ExeExt || n.Platform != "windows") {
			t.Fatalf("ParseFilename(%q) accepted ext %q on %s", s, n.Ext, n.Platform)
		}
		if strings.ContainsAny(s, "/\\\x00") {
			t.Fatalf("ParseFilename(%q) accepted a path", s)
		}
	})
}
