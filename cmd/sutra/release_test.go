package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/master/binapi"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/httpserver"
)

// Issue 13, the release side end to end through the CLI: keygen (0600 key,
// refuses to overwrite), sign (FILE.minisig that release.Verify accepts with
// the identity from the name; a name that does not parse is refused),
// verify (OK, and FAIL with the reason for a tampered binary).
func TestReleaseKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	r := sutraEnv(t, nil, "release", "keygen", "--out", keys, "--no-password")
	r.want(t, 0, "sutra-release.key", "NOT encrypted", "release_public_keys = [\"RW")
	keyPath, pubPath := filepath.Join(keys, release.PrivateKeyFile), filepath.Join(keys, release.PublicKeyFile)
	if fi, err := os.Stat(keyPath); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Fatalf("key file: %v %v", fi, err)
	}
	_, line, err := release.ReadPublicKeyFile(pubPath)
	if err != nil || !strings.Contains(r.stdout, line) {
		t.Fatalf("keygen printed\n%s\nwant the public key line %q (%v)", r.stdout, line, err)
	}
	before, _ := os.ReadFile(keyPath)
	r = sutraEnv(t, nil, "release", "keygen", "--out", keys, "--no-password")
	r.want(t, exitError)
	if !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second keygen: %s", r.stderr)
	}
	if after, _ := os.ReadFile(keyPath); string(after) != string(before) {
		t.Fatal("second keygen changed the key")
	}
	// A password too short, and none at all without a terminal, are refused.
	r = sutraEnv(t, map[string]string{"SUTRA_RELEASE_PASSWORD": "short"}, "release", "keygen", "--out", filepath.Join(dir, "k2"))
	r.want(t, exitUsage)
	r = sutraEnv(t, nil, "release", "keygen", "--out", filepath.Join(dir, "k3"))
	if r.code == 0 || !strings.Contains(r.stderr, "SUTRA_RELEASE_PASSWORD") {
		t.Fatalf("keygen without a terminal or password: %d %s", r.code, r.stderr)
	}

	bin := filepath.Join(dir, "storage-server-1.2.0-linux-x86_64")
	if err := os.WriteFile(bin, []byte("the storage server"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "storage-server-latest")
	if err := os.WriteFile(bad, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = sutraEnv(t, nil, "release", "sign", "--key", keyPath, bin, bad)
	r.want(t, exitUsage)
	if !strings.Contains(r.stderr, "{artifact}-{version}-{platform}-{arch}[.exe]") {
		t.Fatalf("sign of a bad name: %s", r.stderr)
	}
	if _, err := os.Stat(bin + ".minisig"); err == nil {
		t.Fatal("a signature was written although one name was refused")
	}
	r = sutraEnv(t, nil, "release", "sign", "--key", keyPath, bin)
	r.want(t, 0, bin+".minisig", "storage-server 1.2.0 linux/x86_64")
	k, _, _ := release.ReadPublicKeyFile(pubPath)
	sig, err := os.ReadFile(bin + ".minisig")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(bin)
	id, err := k.Verify(f, sig, release.Identity{Artifact: "storage-server", Version: "1.2.0", Platform: "linux", Arch: "x86_64"})
	f.Close()
	if err != nil || id.Size != int64(len("the storage server")) {
		t.Fatalf("release.Verify of the CLI's signature: %+v, %v", id, err)
	}

	r = sutraEnv(t, nil, "release", "verify", "--pub", pubPath, bin)
	r.want(t, 0, "OK")
	r = sutraEnv(t, nil, "release", "verify", "--pub", line, bin)
	r.want(t, 0, "OK")
	if err := os.WriteFile(bin, []byte("the storage server, patched"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = sutraEnv(t, nil, "release", "verify", "--pub", pubPath, bin)
	r.want(t, exitError, "FAIL", "bad-signature")
	r = sutraEnv(t, nil, "release", "help")
	r.want(t, 0, "release keygen --out DIR", "--password-file")
}

// The password-protected key through the CLI: SUTRA_RELEASE_PASSWORD for
// keygen, --password-file for sign.
func TestReleaseSignWithPassword(t *testing.T) {
	if raceOn || testing.Short() {
		t.Skip("an encrypted minisign key costs two 1 GiB scrypt runs: run without -race and -short")
	}
	dir := t.TempDir()
	env := map[string]string{"SUTRA_RELEASE_PASSWORD": "a long enough password"}
	sutraEnv(t, env, "release", "keygen", "--out", dir).want(t, 0, "encrypted with your password")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("a long enough password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sutra-agent-2.0.0-windows-x86_64.exe")
	if err := os.WriteFile(bin, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	sutraEnv(t, nil, "release", "sign", "--key", filepath.Join(dir, release.PrivateKeyFile), "--password-file", pw, bin).want(t, 0, "sutra-agent 2.0.0 windows/x86_64")
	sutraEnv(t, nil, "release", "verify", "--pub", filepath.Join(dir, release.PublicKeyFile), bin).want(t, 0, "OK")
}

// Issue 13: 'sutra binaries' shows SIGNED yes/no from a real master catalog
// and binary API.
func TestCLIBinariesSignedColumn(t *testing.T) {
	dir, keys := t.TempDir(), t.TempDir()
	sutraEnv(t, nil, "release", "keygen", "--out", keys, "--no-password").want(t, 0)
	signed, unsigned := filepath.Join(dir, "storage-server-1.2.0-linux-x86_64"), filepath.Join(dir, "storage-server-1.1.0-linux-x86_64")
	for _, p := range []string{signed, unsigned} {
		if err := os.WriteFile(p, []byte(filepath.Base(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		os.Chtimes(p, old, old)
	}
	sutraEnv(t, nil, "release", "sign", "--key", filepath.Join(keys, release.PrivateKeyFile), signed).want(t, 0)
	cat, err := catalog.Open(context.Background(), catalog.Options{Dir: dir, NoWatch: true, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	api, err := binapi.New(binapi.Options{Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(httpserver.Handler(mux, nil))
	defer srv.Close()

	r := sutraEnv(t, map[string]string{"SUTRA_HTTP": srv.URL}, "binaries")
	r.want(t, 0, "SIGNED")
	rows := map[string]string{}
	for _, l := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "1.2.0" || f[0] == "1.1.0") {
			rows[f[0]] = l
		}
	}
	if !strings.Contains(rows["1.2.0"], " yes ") || !strings.Contains(rows["1.1.0"], " no ") {
		t.Fatalf("binaries table:\n%s\nwant 1.2.0 signed yes, 1.1.0 no", r.stdout)
	}
	sutraEnv(t, map[string]string{"SUTRA_HTTP": srv.URL}, "binaries", "-o", "json").want(t, 0, `"signature": "storage-server-1.2.0-linux-x86_64.minisig"`)
}

// --as signs a build output under the catalog name it will be published as
// (goreleaser's binary_signs), writing the signature where --signature says.
func TestReleaseSignAs(t *testing.T) {
	dir := t.TempDir()
	sutraEnv(t, nil, "release", "keygen", "--out", dir, "--no-password").want(t, 0)
	key, pub := filepath.Join(dir, release.PrivateKeyFile), filepath.Join(dir, release.PublicKeyFile)
	built := filepath.Join(dir, "sutra-agent")
	if err := os.WriteFile(built, []byte("agent build"), 0o755); err != nil {
		t.Fatal(err)
	}
	const name = "sutra-agent-2.1.0-darwin-aarch64"
	out := filepath.Join(dir, name+".minisig")
	sutraEnv(t, nil, "release", "sign", "--key", key, "--as", name, "--signature", out, built).want(t, 0, "sutra-agent 2.1.0 darwin/aarch64")
	if _, err := os.Stat(built + ".minisig"); err == nil {
		t.Fatal("--signature ignored")
	}
	// Laid out under its catalog name, the binary verifies with that signature.
	data, _ := os.ReadFile(built)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	sutraEnv(t, nil, "release", "verify", "--pub", pub, filepath.Join(dir, name)).want(t, 0, "OK")
	sutraEnv(t, nil, "release", "sign", "--key", key, "--as", "sutra-agent-2.1.0", built).want(t, exitUsage)
	sutraEnv(t, nil, "release", "sign", "--key", key, "--as", name, built, built).want(t, exitUsage)
}

// goreleaser.yaml's binary_signs call: the signature's name gives the binary's.
func TestReleaseSignNamedBySignature(t *testing.T) {
	dir := t.TempDir()
	sutraEnv(t, nil, "release", "keygen", "--out", dir, "--no-password").want(t, 0)
	built := filepath.Join(dir, "storage-server")
	if err := os.WriteFile(built, []byte("server build"), 0o755); err != nil {
		t.Fatal(err)
	}
	const name = "storage-server-3.0.0-windows-x86_64.exe"
	sig := filepath.Join(dir, "out", name+".minisig")
	os.MkdirAll(filepath.Dir(sig), 0o755)
	sutraEnv(t, nil, "release", "sign", "--key", filepath.Join(dir, release.PrivateKeyFile), "--signature", sig, built).want(t, 0, "storage-server 3.0.0 windows/x86_64")
	data, _ := os.ReadFile(built)
	if err := os.WriteFile(filepath.Join(dir, "out", name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	sutraEnv(t, nil, "release", "verify", "--pub", filepath.Join(dir, release.PublicKeyFile), filepath.Join(dir, "out", name)).want(t, 0, "OK")
	sutraEnv(t, nil, "release", "sign", "--key", filepath.Join(dir, release.PrivateKeyFile), "--signature", filepath.Join(dir, "x.sig"), built).want(t, exitUsage)
}
