package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sutragrid/sutra/agent/upgrade"
)

// The pre-start check runs from the previous binary, whose strict config
// decoder may not know a key a newer release added: it still finds the data
// dir.
func TestUpgradeCheckDataDirFromNewerConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent-config.toml")
	data := "version = 1\n[agent]\nagent_data_dir = \"state\"\nkey_from_the_future = 1\n"
	if err := os.WriteFile(cfg, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if got, want := checkDataDir(cfg, slog.New(slog.NewTextHandler(&stderr, nil))), filepath.Join(dir, "state"); got != want {
		t.Errorf("checkDataDir = %q, want %q (log: %s)", got, want, stderr.String())
	}
}

// With nothing to check (no upgrade ever), upgrade-check succeeds and
// writes nothing.
func TestUpgradeCheckNoUpgrade(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"upgrade-check", "--data-dir", data}, &stdout, &stderr); err != nil {
		t.Fatalf("upgrade-check: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(data, upgrade.StateFile)); !os.IsNotExist(err) {
		t.Errorf("state file after a no-op check: %v, want none", err)
	}
}
