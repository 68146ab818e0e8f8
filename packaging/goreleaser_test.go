package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every file goreleaser.yaml packages exists (goreleaser check does not look),
// and every build carries the version stamp.
func TestGoreleaserConfigFiles(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	refs := regexp.MustCompile(`(?m)^\s+(?:- src: |src: |postinstall: |preremove: |postremove: |- )((?:packaging|configs)/\S+|README\.md)\s*$`).FindAllStringSubmatch(cfg, -1)
	if len(refs) < 10 {
		t.Fatalf("found %d file references in goreleaser.yaml, want the archive files, units, configs and scripts", len(refs))
	}
	for _, r := range refs {
		matches, err := filepath.Glob(filepath.Join("..", r[1]))
		if err != nil || len(matches) == 0 {
			t.Errorf("goreleaser.yaml packages %s, which does not exist", r[1])
		}
		if strings.Contains(r[1], "scripts/") {
			if fi, err := os.Stat(filepath.Join("..", r[1])); err == nil && fi.Mode()&0o111 == 0 {
				t.Errorf("%s is not executable", r[1])
			}
		}
	}
	for _, m := range []string{"sutra-master", "sutra-agent", "sutra", "storage-server"} {
		if !strings.Contains(cfg, "main: ./cmd/"+m+"\n") {
			t.Errorf("goreleaser.yaml does not build ./cmd/%s", m)
		}
	}
	if !strings.Contains(cfg, "-X github.com/sutragrid/sutra/internal/version.Version={{ .Version }}") {
		t.Error("goreleaser.yaml builds without the version stamp")
	}
}

// Issue 13: the binaries agents run (storage-server, sutra-agent) are signed
// by sutra release sign, each signature named for the file the master serves
// ({artifact}-{version}-{platform}-{arch}[.exe].minisig), which is what the
// signature's trusted comment binds.
func TestGoreleaserSignsTheBinariesAgentsRun(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	_, signs, ok := strings.Cut(cfg, "\nbinary_signs:\n")
	if !ok {
		t.Fatal("goreleaser.yaml has no binary_signs section")
	}
	signs, _, _ = strings.Cut(signs, "\narchives:")
	for _, a := range []string{"storage-server", "sutra-agent"} {
		if !strings.Contains(signs, "ids: ["+a+"]") {
			t.Errorf("binary_signs does not sign %s", a)
		}
		want := "signature: '" + a + `-{{ .Version }}-{{ .Os }}-{{ if eq .Arch "amd64" }}x86_64{{ else if eq .Arch "arm64" }}aarch64{{ else }}{{ .Arch }}{{ end }}{{ if eq .Os "windows" }}.exe{{ end }}.minisig'`
		if !strings.Contains(signs, want) {
			t.Errorf("the %s signature is not named for the catalog file: want %s", a, want)
		}
	}
	for _, w := range []string{`"release", "sign"`, `"--key", "{{ .Env.SUTRA_SIGNING_KEY }}"`, `"--signature", "${signature}", "${artifact}"`} {
		if !strings.Contains(signs, w) {
			t.Errorf("binary_signs args lack %s", w)
		}
	}
}
