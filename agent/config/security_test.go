package config

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

func newPub(t *testing.T) string {
	t.Helper()
	pub, _, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub.String()
}

// Keys pinned in the config win over keys from enrollment; without pinned
// keys the enrollment's are used and signatures are required by default.
func TestEffectiveKeys(t *testing.T) {
	data := t.TempDir()
	if kr, _, require, err := (Security{}).EffectiveKeyring(data); err != nil || kr.Len() != 0 || require {
		t.Fatalf("no keys: %d keys, require %v, %v", kr.Len(), require, err)
	}
	enrolled := newPub(t)
	if err := os.MkdirAll(filepath.Join(data, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "tls", EnrollmentKeysFile), []byte(enrolled+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, src, err := (Security{}).EffectiveKeys(data)
	if err != nil || src != "enrollment" || len(keys) != 1 || keys[0] != enrolled {
		t.Fatalf("EffectiveKeys = %v %q %v, want the enrollment key", keys, src, err)
	}
	if _, _, require, _ := (Security{}).EffectiveKeyring(data); !require {
		t.Fatal("signatures not required with keys from enrollment")
	}
	off := false
	if _, _, require, _ := (Security{RequireSignatures: &off}).EffectiveKeyring(data); require {
		t.Fatal("require_signatures = false ignored")
	}
	pinned := newPub(t)
	keys, src, _ = Security{ReleasePublicKeys: []string{pinned}}.EffectiveKeys(data)
	if src != "config" || len(keys) != 1 || keys[0] != pinned {
		t.Fatalf("pinned keys replaced: %v from %s", keys, src)
	}
	if err := os.WriteFile(filepath.Join(data, "tls", EnrollmentKeysFile), []byte("RWgarbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (Security{}).EffectiveKeys(data); err == nil {
		t.Fatal("a damaged enrollment keys file was accepted")
	}
}

func TestReleaseKeysValidatedAtLoad(t *testing.T) {
	for _, doc := range []string{
		"version = 1\n[security]\nrelease_public_keys = [\"RWnope\"]\n",
		"version = 1\n[security]\nrelease_public_keys = \"RWnot-a-list\"\n",
		"version = 1\n[security]\nrequire_signatures = true\n",
	} {
		if _, err := Parse("agent-config.toml", []byte(doc), testEnv(nil)); err == nil {
			t.Errorf("accepted:\n%s", doc)
		}
	}
	doc := "version = 1\n[security]\nrelease_public_keys = [\"" + newPub(t) + "\"]\n"
	cfg, err := Parse("agent-config.toml", []byte(doc), testEnv(nil))
	if err != nil || !cfg.Security.Require() {
		t.Fatalf("valid key: %v (require %v)", err, cfg != nil && cfg.Security.Require())
	}
}

// release_public_keys_file (e.g. installed by the package) pins keys like
// release_public_keys; a missing or invalid file is a config error.
func TestReleaseKeysFile(t *testing.T) {
	dir := t.TempDir()
	pub, _, _ := minisign.GenerateKey(rand.Reader)
	text, _ := pub.MarshalText() // minisign's .pub format, comment line included
	path := filepath.Join(dir, "sutra-release.pub")
	if err := os.WriteFile(path, append([]byte("# fleet key\n"), text...), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := "version = 1\n[security]\nrelease_public_keys_file = \"" + filepath.ToSlash(path) + "\"\n"
	cfg, err := Parse("agent-config.toml", []byte(doc), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "tls", EnrollmentKeysFile), []byte(newPub(t)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, src, err := cfg.Security.EffectiveKeys(data)
	if err != nil || src != "config" || len(keys) != 1 || keys[0] != pub.String() {
		t.Fatalf("EffectiveKeys = %v from %q, %v; want the file's key, pinned", keys, src, err)
	}
	if _, _, require, _ := cfg.Security.EffectiveKeyring(data); !require || !cfg.Security.Require() {
		t.Fatal("signatures not required with a keys file")
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), dir} {
		doc := "version = 1\n[security]\nrelease_public_keys_file = \"" + filepath.ToSlash(bad) + "\"\n"
		if _, err := Parse("agent-config.toml", []byte(doc), testEnv(nil)); err == nil || !strings.Contains(err.Error(), "release_public_keys_file") {
			t.Errorf("%s: %v, want a release_public_keys_file problem", bad, err)
		}
	}
}
