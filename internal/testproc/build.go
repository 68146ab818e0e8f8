//go:build unix

package testproc

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Binaries is what an end-to-end package's TestMain built once: Need
// skips a test under -short and fails it when the build failed.
type Binaries struct {
	// Dir holds the built files (removed when the tests end).
	Dir string
	// ModuleRoot is the directory of the repository's go.mod.
	ModuleRoot string
	skipped    bool
	err        error
}

// Need skips t under -short (nothing was built) and fails it when the
// build failed.
func (b *Binaries) Need(t testing.TB) {
	t.Helper()
	if b.skipped {
		t.Skip("end-to-end test: skipped with -short")
	}
	if b.err != nil {
		t.Fatalf("building the binaries failed: %v", b.err)
	}
}

// Main is an end-to-end package's TestMain: unless -short, it makes a
// temporary directory, has build fill it (b.Dir, b.ModuleRoot set), runs
// the tests and removes the directory. Its result is the exit code.
func Main(m *testing.M, name string, b *Binaries, build func() error) int {
	flag.Parse()
	if testing.Short() {
		b.skipped = true
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sutra-"+name+"-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	defer os.RemoveAll(dir)
	b.Dir = dir
	if b.ModuleRoot, b.err = moduleRoot(); b.err == nil {
		b.err = build()
	}
	return m.Run()
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Stamp is the -ldflags that sets the version a grid binary reports.
func Stamp(version string) string {
	return "-X github.com/sutragrid/sutra/internal/version.Version=" + version
}

// GoBuild builds pkgs of the module (./cmd/…) into out (a file, or a
// directory ending in a separator for several), static and trimmed.
func (b *Binaries) GoBuild(ldflags, out string, pkgs ...string) error {
	args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", out}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = b.ModuleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
