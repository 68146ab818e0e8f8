package main

import (
	"crypto/rand"
	"github.com/sutragrid/sutra/internal/release"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

func TestParseReleaseKeys(t *testing.T) {
	pub1, _, _ := minisign.GenerateKey(rand.Reader)
	pub2, _, _ := minisign.GenerateKey(rand.Reader)
	k1, k2 := pub1.String(), pub2.String()
	if keys, err := parseReleaseKeys(""); err != nil || keys != nil {
		t.Fatalf("empty = %v, %v", keys, err)
	}
	if keys, err := parseReleaseKeys(k1 + ", " + k2); err != nil || len(keys) != 2 {
		t.Fatalf("list = %v, %v", keys, err)
	}
	// A sutra-release.pub file (minisign's format, with its comment line).
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "sutra-release.pub")
	text, _ := pub1.MarshalText()
	if err := os.WriteFile(pubFile, append(text, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if keys, err := parseReleaseKeys(pubFile); err != nil || len(keys) != 1 || keys[0] != k1 {
		t.Fatalf("file = %v, %v", keys, err)
	}
	for _, bad := range []string{"RWnope", k1 + ",RWnope", filepath.Join(dir, "missing"), dir} {
		if _, err := parseReleaseKeys(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("# x\n", release.MaxKeysFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parseReleaseKeys(big); err == nil {
		t.Error("oversized file accepted")
	}
}

func FuzzParseReleaseKeys(f *testing.F) {
	pub, _, _ := minisign.GenerateKey(rand.Reader)
	for _, s := range []string{pub.String(), pub.String() + "," + pub.String(), "RW", "RW,,,", "RW" + strings.Repeat("A", 5000), "RW\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !strings.HasPrefix(strings.TrimSpace(v), "RW") {
			return // a path: not fuzzed against the file system
		}
		keys, err := parseReleaseKeys(v)
		if err == nil && len(keys) > 16 {
			t.Fatalf("%d keys accepted", len(keys))
		}
	})
}
