package packaging

import (
	"context"
	"errors"
	"github.com/sutragrid/sutra/master/catalog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/artifact"
	"github.com/sutragrid/sutra/internal/platform"
)

// dist-binaries.sh lays out every artifact for every platform under names
// the master's catalog grammar accepts, version-stamped.
func TestDistBinaries(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("dist-binaries.sh is a bash script")
	}
	if testing.Short() {
		t.Skip("cross-compiles 12 binaries")
	}
	const version = "1.2.3-rc.1"
	out := t.TempDir()
	cmd := exec.Command("bash", "dist-binaries.sh", version, out)
	cmd.Env = append(os.Environ(), "GO="+goBinary())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dist-binaries.sh: %v\n%s", err, b)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		n, err := artifact.ParseFilename(e.Name())
		if err != nil {
			t.Errorf("%s: the master would not register it: %v", e.Name(), err)
			continue
		}
		if n.Version != version {
			t.Errorf("%s: version %s, want %s", e.Name(), n.Version, version)
		}
		got = append(got, n.Artifact+" "+n.Platform+" "+n.Arch+" "+n.Ext)
	}
	var want []string
	for _, a := range []string{"storage-server", "sutra-agent"} {
		for _, goos := range []string{"linux", "darwin", "windows"} {
			for _, goarch := range []string{"amd64", "arm64"} {
				p, arch, err := platform.FromGo(goos, goarch)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, a+" "+p+" "+arch+" "+platform.ExeSuffix(p))
			}
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("dist-binaries.sh laid out\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A real master catalog on that directory registers all of them.
	cat, err := catalog.Open(context.Background(), catalog.Options{Dir: out, NoWatch: true, Settle: time.Nanosecond, Rescan: -1})
	if err != nil {
		t.Fatalf("catalog.Open(%s): %v", out, err)
	}
	defer cat.Close()
	var registered []string
	for _, a := range []string{"storage-server", "sutra-agent"} {
		for _, b := range cat.List(a) {
			if b.Version != version || len(b.SHA256) != 64 {
				t.Errorf("catalog: %s version %s sha256 %q", b.Filename, b.Version, b.SHA256)
			}
			registered = append(registered, b.Artifact+" "+b.Platform+" "+b.Arch+" "+platform.ExeSuffix(b.Platform))
		}
	}
	slices.Sort(registered)
	if !slices.Equal(registered, want) {
		t.Errorf("the master's catalog registered\n%s\nwant\n%s", strings.Join(registered, "\n"), strings.Join(want, "\n"))
	}

	// The binaries for this machine run and report the stamped version.
	p, arch, err := platform.Current()
	if err != nil {
		t.Skipf("no binaries for this machine: %v", err)
	}
	for _, a := range []string{"storage-server", "sutra-agent"} {
		bin := filepath.Join(out, artifact.Filename(a, version, p, arch)+platform.ExeSuffix(p))
		b, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Errorf("%s --version: %v", bin, err)
		} else if strings.TrimSpace(string(b)) != version {
			t.Errorf("%s --version = %q, want %s", bin, b, version)
		}
	}
}

func TestDistBinariesRejectsBadVersions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("dist-binaries.sh is a bash script")
	}
	for _, v := range []string{"v1.2.3", "1.2", "1.2.3+build.5", "01.2.3", "latest"} {
		out := t.TempDir()
		cmd := exec.Command("bash", "dist-binaries.sh", v, out)
		b, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(b), v) {
			t.Errorf("dist-binaries.sh %s = %v %q, want exit 2 naming the version", v, err, b)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("dist-binaries.sh %s wrote %d files", v, len(entries))
		}
	}
}

// goBinary is the go command running this test (GOROOT/bin/go), so the
// script builds with the same toolchain.
func goBinary() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
