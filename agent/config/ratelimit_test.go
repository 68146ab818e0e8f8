package config

import (
	"strings"
	"testing"
)

// agent.download_rate_limit: unlimited by default, a rate when set (the
// master's syntax, internal/ratespec), and a bad value is an error naming
// the key.
func TestDownloadRateLimit(t *testing.T) {
	def, err := Parse("agent-config.toml", nil, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if def.Agent.DownloadRate() != 0 {
		t.Fatalf("default download rate = %d, want unlimited", def.Agent.DownloadRate())
	}
	cfg, err := Parse("agent-config.toml", []byte("[agent]\ndownload_rate_limit = \"50MB/s\"\n"), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Agent.DownloadRate(); got != 50_000_000 {
		t.Fatalf("download_rate_limit 50MB/s = %d B/s", got)
	}
	for _, bad := range []string{"fast", "-5MB/s", "1e9", "5 parsecs"} {
		_, err := Parse("agent-config.toml", []byte("[agent]\ndownload_rate_limit = \""+bad+"\"\n"), testEnv(nil))
		if err == nil || !strings.Contains(err.Error(), "agent.download_rate_limit") {
			t.Errorf("download_rate_limit %q: err = %v, want an error naming agent.download_rate_limit", bad, err)
		}
	}
}
