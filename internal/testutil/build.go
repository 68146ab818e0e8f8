package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// VersionFlag is the -ldflags -X setting that stamps version into
// internal/version.Version, as the release build does.
func VersionFlag(version string) string {
	return "-X github.com/sutragrid/sutra/internal/version.Version=" + version
}

// GoTool is the go command of the toolchain running the tests (GOROOT's),
// or "go" from PATH when that is not there.
func GoTool() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

// Build is one `go build` of helper programs a test runs.
type Build struct {
	// Dir is where go runs, which relative package paths are taken from;
	// "" is the test's package directory.
	Dir string
	// Out is the -o argument: a file, or a directory ending in a path
	// separator for several packages.
	Out string
	// LDFlags is the -ldflags argument when not empty (see VersionFlag).
	LDFlags string
	// Env is added to the environment (for example "CGO_ENABLED=0").
	Env []string
	// Pkgs are the packages to build.
	Pkgs []string
}

// GoBuild runs the build; on failure the error carries go's output. It
// takes no testing.T so that TestMain can call it.
func GoBuild(b Build) error {
	args := []string{"build", "-o", b.Out}
	if b.LDFlags != "" {
		args = append(args, "-ldflags", b.LDFlags)
	}
	args = append(args, b.Pkgs...)
	cmd := exec.Command(GoTool(), args...)
	cmd.Dir = b.Dir
	if len(b.Env) > 0 {
		cmd.Env = append(os.Environ(), b.Env...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
