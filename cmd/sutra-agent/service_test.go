package main

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// install --join-token stores the token in the agent_data_dir the service
// will use: the config's (relative to the config file), or on Linux the
// systemd unit's default /var/lib/sutra/agent, whatever the installer's HOME.
func TestServiceDataDir(t *testing.T) {
	dir := t.TempDir()
	withDir := filepath.Join(dir, "with.toml")
	if err := os.WriteFile(withDir, []byte("version = 1\n[agent]\nagent_data_dir = \"state\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := serviceDataDir(withDir); err != nil || got != filepath.Join(dir, "state") {
		t.Errorf("serviceDataDir = %q, %v; want %q", got, err, filepath.Join(dir, "state"))
	}
	if runtime.GOOS != "linux" {
		return
	}
	t.Setenv("HOME", dir)
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "xdg"))
	bare := filepath.Join(dir, "bare.toml")
	if err := os.WriteFile(bare, []byte("version = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := serviceDataDir(bare); err != nil || got != "/var/lib/sutra/agent" {
		t.Errorf("serviceDataDir without agent_data_dir = %q, %v; want /var/lib/sutra/agent", got, err)
	}
}
