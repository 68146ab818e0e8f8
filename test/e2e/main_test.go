//go:build linux

package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/platform"
)

// bins are the binaries TestMain builds once for every test.
var bins struct {
	dir                string // sutra-master, sutra-agent, sutra
	master, agent, cli string
	plat, arch         string
	server             map[string]string // storage-server version -> built file (1.2.0: brokenserver)
	serverNames        map[string]string // version -> storage-server-{version}-{platform}-{arch}
	broken             string            // brokenserver
	moduleRoot         string
	buildErr           error
	skipped            bool // -short
}

const (
	v100, v110, v120 = "1.0.0", "1.1.0", "1.2.0" // 1.2.0 is broken: it exits at once
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		bins.skipped = true
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "sutra-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	bins.buildErr = build(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the grid's binaries into dir: the three commands at version
// 0.9.0, storage-server stamped 1.0.0 and 1.1.0, and the broken test program.
func build(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	bins.moduleRoot = filepath.Dir(strings.TrimSpace(string(out)))
	if bins.plat, bins.arch, err = platform.Current(); err != nil {
		return err
	}
	bins.dir = dir
	bins.master = filepath.Join(dir, "sutra-master")
	bins.agent = filepath.Join(dir, "sutra-agent")
	bins.cli = filepath.Join(dir, "sutra")
	bins.server = map[string]string{}
	bins.serverNames = map[string]string{}
	stamp := func(v string) string {
		return "-X github.com/sutragrid/sutra/internal/version.Version=" + v
	}
	goBuild := func(ldflags, out string, pkgs ...string) error {
		args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", out}, pkgs...)
		cmd := exec.Command("go", args...)
		cmd.Dir = bins.moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	if err := goBuild(stamp("0.9.0"), dir+string(filepath.Separator), "./cmd/sutra-master", "./cmd/sutra-agent", "./cmd/sutra"); err != nil {
		return err
	}
	for _, v := range []string{v100, v110} {
		p := filepath.Join(dir, "storage-server-"+v)
		if err := goBuild(stamp(v), p, "./cmd/storage-server"); err != nil {
			return err
		}
		bins.server[v] = p
	}
	bins.broken = filepath.Join(dir, "brokenserver")
	if err := goBuild("", bins.broken, "./test/e2e/testdata/brokenserver"); err != nil {
		return err
	}
	bins.server[v120] = bins.broken
	for _, v := range []string{v100, v110, v120} {
		bins.serverNames[v] = fmt.Sprintf("storage-server-%s-%s-%s", v, bins.plat, bins.arch)
	}
	return nil
}

// needBinaries skips in -short mode and fails when the build failed.
func needBinaries(t *testing.T) {
	t.Helper()
	if bins.skipped {
		t.Skip("end-to-end test: skipped with -short")
	}
	if bins.buildErr != nil {
		t.Fatalf("building the binaries failed: %v", bins.buildErr)
	}
}
