//go:build linux

package ha

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testproc"
)

// bins are the binaries TestMain builds once.
var bins struct {
	master, agent, cli, etcd string
	plat, arch               string
	server                   map[string]string // storage-server version -> built file
	serverNames              map[string]string // version -> storage-server-{version}-{platform}-{arch}
	testproc.Binaries
}

const v100, v110 = "1.0.0", "1.1.0"

func TestMain(m *testing.M) { os.Exit(testproc.Main(m, "ha", &bins.Binaries, build)) }

// build compiles sutra-master, sutra-agent and sutra at 0.9.0, etcdmember,
// and storage-server stamped 1.0.0 and 1.1.0 into dir.
func build() error {
	dir := bins.Dir
	var err error
	if bins.plat, bins.arch, err = platform.Current(); err != nil {
		return err
	}
	bins.master = filepath.Join(dir, "sutra-master")
	bins.agent = filepath.Join(dir, "sutra-agent")
	bins.cli = filepath.Join(dir, "sutra")
	bins.etcd = filepath.Join(dir, "etcdmember")
	bins.server, bins.serverNames = map[string]string{}, map[string]string{}
	if err := bins.GoBuild(testproc.Stamp("0.9.0"), dir+string(filepath.Separator),
		"./cmd/sutra-master", "./cmd/sutra-agent", "./cmd/sutra", "./internal/etcdtest/etcdmember"); err != nil {
		return err
	}
	for _, v := range []string{v100, v110} {
		p := filepath.Join(dir, "storage-server-"+v)
		if err := bins.GoBuild(testproc.Stamp(v), p, "./cmd/storage-server"); err != nil {
			return err
		}
		bins.server[v] = p
		bins.serverNames[v] = fmt.Sprintf("storage-server-%s-%s-%s", v, bins.plat, bins.arch)
	}
	return nil
}

func needBinaries(t *testing.T) { bins.Need(t) }
