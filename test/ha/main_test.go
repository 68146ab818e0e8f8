//go:build linux

package ha

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

// bins are the binaries TestMain builds once.
var bins struct {
	master, agent, cli, etcd string
	plat, arch               string
	server                   map[string]string // storage-server version -> built file
	serverNames              map[string]string // version -> storage-server-{version}-{platform}-{arch}
	buildErr                 error
	skipped                  bool
}

const v100, v110 = "1.0.0", "1.1.0"

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		bins.skipped = true
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "sutra-ha-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ha:", err)
		os.Exit(1)
	}
	bins.buildErr = build(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles sutra-master, sutra-agent and sutra at 0.9.0, etcdmember,
// and storage-server stamped 1.0.0 and 1.1.0 into dir.
func build(dir string) error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if bins.plat, bins.arch, err = platform.Current(); err != nil {
		return err
	}
	bins.master = filepath.Join(dir, "sutra-master")
	bins.agent = filepath.Join(dir, "sutra-agent")
	bins.cli = filepath.Join(dir, "sutra")
	bins.etcd = filepath.Join(dir, "etcdmember")
	bins.server, bins.serverNames = map[string]string{}, map[string]string{}
	stamp := func(v string) string { return "-X github.com/sutragrid/sutra/internal/version.Version=" + v }
	goBuild := func(ldflags, out string, pkgs ...string) error {
		args := append([]string{"build", "-trimpath", "-ldflags", ldflags, "-o", out}, pkgs...)
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	if err := goBuild(stamp("0.9.0"), dir+string(filepath.Separator),
		"./cmd/sutra-master", "./cmd/sutra-agent", "./cmd/sutra", "./internal/etcdtest/etcdmember"); err != nil {
		return err
	}
	for _, v := range []string{v100, v110} {
		p := filepath.Join(dir, "storage-server-"+v)
		if err := goBuild(stamp(v), p, "./cmd/storage-server"); err != nil {
			return err
		}
		bins.server[v] = p
		bins.serverNames[v] = fmt.Sprintf("storage-server-%s-%s-%s", v, bins.plat, bins.arch)
	}
	return nil
}

func needBinaries(t *testing.T) {
	t.Helper()
	if bins.skipped {
		t.Skip("end-to-end test: skipped with -short")
	}
	if bins.buildErr != nil {
		t.Fatalf("building the binaries failed: %v", bins.buildErr)
	}
}
