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
