package packaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/master/catalog"
)

// Issue 13: with SUTRA_SIGNING_KEY, dist-binaries.sh writes NAME.minisig
// beside every binary (a signature release.Verify accepts for that name),
// leaves no staging behind, and a master catalog on the directory offers
// every binary signed.
func TestDistBinariesSigned(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("dist-binaries.sh is a bash script")
	}
	if testing.Short() {
		t.Skip("builds binaries")
	}
	keys := t.TempDir()
	_, keyPath, pubPath, err := release.WriteKeyPair(keys, "")
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := release.ReadPublicKeyFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	const version = "1.2.4"
	out := t.TempDir()
	cmd := exec.Command("bash", "dist-binaries.sh", version, out)
	cmd.Env = append(os.Environ(), "GO="+goBinary(), "TARGETS=linux/amd64 windows/arm64", "SUTRA_SIGNING_KEY="+keyPath)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dist-binaries.sh: %v\n%s", err, b)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{
		"storage-server-1.2.4-linux-x86_64", "storage-server-1.2.4-linux-x86_64.minisig",
		"storage-server-1.2.4-windows-aarch64.exe", "storage-server-1.2.4-windows-aarch64.exe.minisig",
		"sutra-agent-1.2.4-linux-x86_64", "sutra-agent-1.2.4-linux-x86_64.minisig",
		"sutra-agent-1.2.4-windows-aarch64.exe", "sutra-agent-1.2.4-windows-aarch64.exe.minisig",
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("laid out\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	for _, n := range want {
		if strings.HasSuffix(n, release.SignatureSuffix) {
			continue
		}
		if id, err := release.VerifyFile(k, filepath.Join(out, n)); err != nil || id.Version != version {
			t.Errorf("%s: %+v, %v", n, id, err)
		}
	}
	cat, err := catalog.Open(context.Background(), catalog.Options{Dir: out, NoWatch: true, Settle: time.Nanosecond, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	for _, a := range []string{"storage-server", "sutra-agent"} {
		for _, b := range cat.List(a) {
			if b.Signature != b.Filename+release.SignatureSuffix {
				t.Errorf("catalog: %s offered unsigned", b.Filename)
			}
		}
	}

	// A key that is not a file stops the script before it builds anything.
	bad := exec.Command("bash", "dist-binaries.sh", version, t.TempDir())
	bad.Env = append(os.Environ(), "GO="+goBinary(), "SUTRA_SIGNING_KEY="+filepath.Join(keys, "missing.key"))
	if b, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(b), "SUTRA_SIGNING_KEY") {
		t.Errorf("missing key: %v %s", err, b)
	}
}
