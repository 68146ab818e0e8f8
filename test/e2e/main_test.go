//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testproc"
)

// bins are the binaries TestMain builds once for every test.
var bins struct {
	master, agent, cli string
	plat, arch         string
	server             map[string]string // storage-server version -> built file (1.2.0: brokenserver)
	serverNames        map[string]string // version -> storage-server-{version}-{platform}-{arch}
	broken             string            // brokenserver
	testproc.Binaries                    // Dir: sutra-master, sutra-agent, sutra
}

const (
	v100, v110, v120 = "1.0.0", "1.1.0", "1.2.0" // 1.2.0 is broken: it exits at once
)

func TestMain(m *testing.M) { os.Exit(testproc.Main(m, "e2e", &bins.Binaries, build)) }

// build compiles the grid's binaries into dir: the three commands at version
// 0.9.0, storage-server stamped 1.0.0 and 1.1.0, and the broken test program.
func build() error {
	dir := bins.Dir
	var err error
	if bins.plat, bins.arch, err = platform.Current(); err != nil {
		return err
	}
	bins.master = filepath.Join(dir, "sutra-master")
	bins.agent = filepath.Join(dir, "sutra-agent")
	bins.cli = filepath.Join(dir, "sutra")
	bins.server = map[string]string{}
	bins.serverNames = map[string]string{}
	if err := bins.GoBuild(testproc.Stamp("0.9.0"), dir+string(filepath.Separator), "./cmd/sutra-master", "./cmd/sutra-agent", "./cmd/sutra"); err != nil {
		return err
	}
	for _, v := range []string{v100, v110} {
		p := filepath.Join(dir, "storage-server-"+v)
		if err := bins.GoBuild(testproc.Stamp(v), p, "./cmd/storage-server"); err != nil {
			return err
		}
		bins.server[v] = p
	}
	bins.broken = filepath.Join(dir, "brokenserver")
	if err := bins.GoBuild("", bins.broken, "./test/e2e/testdata/brokenserver"); err != nil {
		return err
	}
	bins.server[v120] = bins.broken
	for _, v := range []string{v100, v110, v120} {
		bins.serverNames[v] = fmt.Sprintf("storage-server-%s-%s-%s", v, bins.plat, bins.arch)
	}
	return nil
}

// needBinaries skips in -short mode and fails when the build failed.
func needBinaries(t *testing.T) { bins.Need(t) }
