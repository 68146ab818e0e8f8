package config

import (
	"strings"
	"testing"
)

// agent.metrics_addr: off by default, a host:port when set, and a bad
// value is an error naming the key.
func TestMetricsAddr(t *testing.T) {
	def, err := Parse("agent-config.toml", nil, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if def.Agent.MetricsAddr != "" {
		t.Fatalf("default metrics_addr = %q, want off", def.Agent.MetricsAddr)
	}
	cfg, err := Parse("agent-config.toml", []byte("[agent]\nmetrics_addr = \"127.0.0.1:7002\"\n"), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.MetricsAddr != "127.0.0.1:7002" {
		t.Fatalf("metrics_addr = %q", cfg.Agent.MetricsAddr)
	}
	for _, bad := range []string{"7002", "http://127.0.0.1:7002", "127.0.0.1:99999", "host:port"} {
		_, err := Parse("agent-config.toml", []byte("[agent]\nmetrics_addr = \""+bad+"\"\n"), testEnv(nil))
		if err == nil || !strings.Contains(err.Error(), "agent.metrics_addr") {
			t.Errorf("metrics_addr %q: err = %v, want an error naming agent.metrics_addr", bad, err)
		}
	}
}
