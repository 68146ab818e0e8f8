package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// testEnv is a hermetic machine: fixed hostname and user dirs, and the given
// environment variables only.
func testEnv(vars map[string]string) Env {
	return Env{
		Getenv:       func(k string) string { return vars[k] },
		Hostname:     func() (string, error) { return "host-a", nil },
		UserCacheDir: func() (string, error) { return filepath.FromSlash("/home/u/.cache"), nil },
		UserDataDir:  func() (string, error) { return filepath.FromSlash("/home/u/.local/share"), nil },
		HomeDir:      func() (string, error) { return filepath.FromSlash("/home/u"), nil },
	}
}

func TestExampleFileLoads(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "agent-config.toml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(path, data, testEnv(nil))
	if err != nil {
		t.Fatalf("Parse(%s) = %v, want no error", path, err)
	}
	// The example documents the defaults: it must equal an empty file's
	// configuration (agent_id is commented out, so packaged configs register
	// each machine under its hostname).
	def, err := Parse(path, nil, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfgString(cfg), cfgString(def); got != want {
		t.Errorf("example file differs from the defaults:\n got %s\nwant %s", got, want)
	}
}

func cfgString(c *Config) string {
	var b strings.Builder
	for _, s := range []any{c.Version, c.Agent, c.Storage.BinaryPath, c.Storage.MasterBinaryURL,
		c.Storage.DataPath, c.Storage.PortRangeStart, c.Storage.StopNodesOnExit, c.Monitoring, c.Logging} {
		b.WriteString(strings.TrimSpace(strings.ReplaceAll(fmtAny(s), "\n", " ")))
		b.WriteString(" | ")
	}
	return b.String()
}

func TestDesignDocExample(t *testing.T) {
	const doc = `# agent-config.toml
[agent]
agent_id = "agent-1"
master_host = "localhost:7000"
platform = "process"
auto_download_binary = true  # NEW!

[storage]
binary_path = ""  # Leave empty to auto-download
master_binary_url = "http://localhost:7001"  # Binary distribution endpoint
`
	cfg, err := Parse("agent-config.toml", []byte(doc), testEnv(nil))
	if err != nil {
		t.Fatalf("design document example: %v", err)
	}
	if cfg.Agent.AgentID != "agent-1" || cfg.Storage.MasterBinaryURL != "http://localhost:7001" || !cfg.Agent.AutoDownloadBinary {
		t.Errorf("design document example decoded as %+v", cfg)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("", nil, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"agent_id", cfg.Agent.AgentID, "host-a"},
		{"master_host", cfg.Agent.MasterHost, "localhost:7000"},
		{"master_binary_url", cfg.Storage.MasterBinaryURL, "http://localhost:7001"},
		{"cache_dir", cfg.Agent.CacheDir, filepath.FromSlash("/home/u/.cache/sutra")},
		{"agent_data_dir", cfg.Agent.AgentDataDir, filepath.FromSlash("/home/u/.local/share/sutra/agent")},
		{"data_path", cfg.Storage.DataPath, filepath.FromSlash("/home/u/.local/share/sutra/nodes")},
		{"max_storage_nodes", cfg.Agent.MaxStorageNodes, 4},
		{"port_range_start", cfg.Storage.PortRangeStart, 50051},
		{"heartbeat", cfg.Monitoring.HeartbeatIntervalSecs, 5},
		{"health interval", cfg.Monitoring.HealthCheckIntervalSecs, 5},
		{"restart_failed_nodes", cfg.Monitoring.RestartFailedNodes, true},
		{"auto_download_binary", cfg.Agent.AutoDownloadBinary, true},
		{"auto_update", cfg.Agent.AutoUpdate, false},
		{"upgrade_window_secs", cfg.Agent.UpgradeWindow(), 60 * time.Second},
		{"stop_nodes_on_exit unset→run default", cfg.Storage.StopNodesOnExitOr(true), true},
		{"stop_nodes_on_exit unset→service default", cfg.Storage.StopNodesOnExitOr(false), false},
		{"level", cfg.Logging.Level, "info"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestValues(t *testing.T) {
	const file = `version = 1
[agent]
agent_id = "a-2"
master_host = "grid.example:7100"
max_storage_nodes = 8
cache_dir = "cache"
agent_data_dir = "~/agent"
labels = { zone = "eu-1", rack = "r7" }
auto_update = true
upgrade_window_secs = 15
[storage]
data_path = "/srv/nodes"
port_range_start = 60000
stop_nodes_on_exit = false
[monitoring]
heartbeat_interval_secs = 10
restart_failed_nodes = false
[logging]
level = "debug"
`
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.toml")
	cfg, err := Parse(path, []byte(file), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Storage.MasterBinaryURL, "http://grid.example:7001"; got != want {
		t.Errorf("derived master_binary_url = %q, want %q", got, want)
	}
	if got, want := cfg.Agent.CacheDir, filepath.Join(dir, "cache"); got != want {
		t.Errorf("relative cache_dir = %q, want %q", got, want)
	}
	if got, want := cfg.Agent.AgentDataDir, filepath.FromSlash("/home/u/agent"); got != want {
		t.Errorf("~ agent_data_dir = %q, want %q", got, want)
	}
	if cfg.Agent.Labels["zone"] != "eu-1" || cfg.Agent.Labels["rack"] != "r7" {
		t.Errorf("labels = %v", cfg.Agent.Labels)
	}
	if got := cfg.Agent.UpgradeWindow(); got != 15*time.Second {
		t.Errorf("upgrade_window_secs = %v, want 15s", got)
	}
	if cfg.Storage.StopNodesOnExitOr(true) {
		t.Error("stop_nodes_on_exit = false was not kept")
	}
	if cfg.Monitoring.HeartbeatInterval().Seconds() != 10 || cfg.Monitoring.RestartFailedNodes {
		t.Errorf("monitoring = %+v", cfg.Monitoring)
	}
	if cfg.Logging.SlogLevel().String() != "DEBUG" {
		t.Errorf("level = %v", cfg.Logging.SlogLevel())
	}
}

func TestEnvOverrides(t *testing.T) {
	const file = `[agent]
master_host = "localhost:7000"
[storage]
master_binary_url = "http://localhost:7001"
`
	cfg, err := Parse("a.toml", []byte(file), testEnv(map[string]string{
		EnvMaster: "master.internal:7000", EnvAgentID: "pod-7", EnvCacheDir: "/tmp/c",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.MasterHost != "master.internal:7000" || cfg.Agent.AgentID != "pod-7" ||
		cfg.Agent.CacheDir != filepath.Clean(mustAbs(t, "/tmp/c")) {
		t.Errorf("env overrides not applied: %+v", cfg.Agent)
	}
	// The file's URL was the one derived from its master: it follows SUTRA_MASTER.
	if got, want := cfg.Storage.MasterBinaryURL, "http://master.internal:7001"; got != want {
		t.Errorf("master_binary_url = %q, want %q", got, want)
	}

	// An explicitly different URL stays.
	cfg, err = Parse("a.toml", []byte("[storage]\nmaster_binary_url = \"https://cdn.example\"\n"),
		testEnv(map[string]string{EnvMaster: "m:7000"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Storage.MasterBinaryURL, "https://cdn.example"; got != want {
		t.Errorf("master_binary_url = %q, want %q", got, want)
	}

	// A bad env value is reported as coming from the environment.
	_, err = Parse("a.toml", nil, testEnv(map[string]string{EnvMaster: "http://m:7000"}))
	if err == nil || !strings.Contains(err.Error(), "environment variable SUTRA_MASTER") {
		t.Errorf("bad SUTRA_MASTER: err = %v, want it to name the variable", err)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // substrings of the error
	}{
		{"unknown top-level key", "versoin = 1\n", []string{"a.toml:1: versoin: unknown key"}},
		{"unknown table", "[agent]\n[extra]\nx = 1\n", []string{"a.toml:2: extra: unknown key"}},
		{"unknown key in table", "[agent]\nagent_id = \"a\"\nmaster = \"m:1\"\n",
			[]string{"a.toml:3: agent.master: unknown key", "accepted in [agent]: agent_id, master_host"}},
		{"unknown monitoring key", "[monitoring]\n\nheartbeat_secs = 5\n", []string{"a.toml:3: monitoring.heartbeat_secs: unknown key"}},
		{"wrong type int", "[agent]\nmax_storage_nodes = \"4\"\n", []string{"a.toml:2: agent.max_storage_nodes: wrong type: got string, want integer"}},
		{"wrong type bool", "[agent]\nauto_download_binary = \"yes\"\n", []string{"a.toml:2: agent.auto_download_binary: wrong type: got string, want boolean"}},
		{"wrong type string", "[storage]\nbinary_path = 5\n", []string{"a.toml:2: storage.binary_path: wrong type: got integer, want string"}},
		{"float for int", "[monitoring]\nheartbeat_interval_secs = 2.5\n", []string{"a.toml:2: monitoring.heartbeat_interval_secs: wrong type: got float, want integer"}},
		{"section not a table", "agent = 5\n", []string{"a.toml:1: agent: wrong type: got integer, want a table"}},
		{"labels not strings", "[agent]\nlabels = { a = 1 }\n", []string{"a.toml:2: agent.labels:", "table of strings"}},
		{"version 2", "version = 2\n", []string{"a.toml:1: version: unsupported config version 2 (accepted: 1)"}},
		{"platform docker", "[agent]\nplatform = \"docker\"\n", []string{"a.toml:2: agent.platform: \"docker\" is not supported yet (accepted: process)"}},
		{"platform unknown", "[agent]\nplatform = \"vm\"\n", []string{"agent.platform: unknown platform \"vm\" (accepted: process)"}},
		{"master_host url", "[agent]\nmaster_host = \"http://m:7000\"\n", []string{"agent.master_host: \"http://m:7000\" is a URL, not host:port"}},
		{"master_host no port", "[agent]\nmaster_host = \"m\"\n", []string{"agent.master_host: \"m\" is not host:port"}},
		{"master_host bad port", "[agent]\nmaster_host = \"m:99999\"\n", []string{"agent.master_host: \"m:99999\" has an invalid port"}},
		{"binary url scheme", "[storage]\nmaster_binary_url = \"ftp://m\"\n", []string{"storage.master_binary_url: \"ftp://m\" must start with http:// or https://"}},
		{"binary url query", "[storage]\nmaster_binary_url = \"http://m/?a=b\"\n", []string{"must not carry credentials, a query or a fragment"}},
		{"max nodes zero", "[agent]\nmax_storage_nodes = 0\n", []string{"agent.max_storage_nodes: 0 is out of range (accepted: 1 to 1000)"}},
		{"port zero", "[storage]\nport_range_start = 0\n", []string{"storage.port_range_start: 0 is out of range"}},
		{"port range overflow", "[storage]\nport_range_start = 65534\n", []string{"storage.port_range_start: 65534 leaves no room for 4 nodes (ports 65534-65535 hold 2; accepted: up to 65532)"}},
		{"heartbeat zero", "[monitoring]\nheartbeat_interval_secs = 0\n", []string{"monitoring.heartbeat_interval_secs: 0 is out of range (accepted: 1 to 86400 seconds)"}},
		{"upgrade window too short", "[agent]\nupgrade_window_secs = 4\n", []string{"a.toml:2: agent.upgrade_window_secs: 4 is out of range (accepted: 5 to 86400 seconds)"}},
		{"timeout negative", "[monitoring]\nhealth_check_timeout_secs = -1\n", []string{"monitoring.health_check_timeout_secs: -1 is out of range"}},
		{"restart max failures zero", "[monitoring]\nrestart_max_failures = 0\n", []string{"monitoring.restart_max_failures: 0 is out of range (accepted: 1 to 1000)"}},
		{"restart window too long", "[monitoring]\nrestart_window_secs = 90000\n", []string{"monitoring.restart_window_secs: 90000 is out of range"}},
		{"level", "[logging]\nlevel = \"verbose\"\n", []string{"logging.level: unknown level \"verbose\" (accepted: debug, info, warn, error)"}},
		{"format", "[logging]\nformat = \"xml\"\n", []string{"logging.format: unknown format \"xml\" (accepted: text, json)"}},
		{"agent id", "[agent]\nagent_id = \"a b\"\n", []string{"agent.agent_id: \"a b\" is not a valid agent id"}},
		{"nothing to run", "[agent]\nauto_download_binary = false\n", []string{"agent.auto_download_binary: is false and storage.binary_path is empty"}},
		{"syntax", "[agent\n", []string{"a.toml:2: invalid TOML"}},
		{"every problem at once", "[agent]\nplatform = \"docker\"\nbogus = 1\n[logging]\nlevel = \"x\"\n",
			[]string{"a.toml:2: agent.platform", "a.toml:3: agent.bogus: unknown key", "a.toml:5: logging.level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("a.toml", []byte(tt.file), testEnv(nil))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want %q", tt.file, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error:\n%v\nwant it to contain %q", tt.file, err, w)
				}
			}
			var p *Problem
			if !errors.As(err, &p) {
				t.Errorf("error %v is not a *Problem", err)
			}
		})
	}
}

func TestWindowsBinaryPath(t *testing.T) {
	if runtime.GOOS != "windows" {
		t.Skip("windows only")
	}
	_, err := Parse("a.toml", []byte("[storage]\nbinary_path = 'C:\\\\s\\\\storage-server'\n"), testEnv(nil))
	if err == nil || !strings.Contains(err.Error(), ".exe") {
		t.Errorf("err = %v, want .exe complaint", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "--config") {
		t.Errorf("Load(missing) = %v, want ErrNotExist with a hint", err)
	}
}

func FuzzLoadConfig(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join("..", "..", "configs", "agent-config.toml")); err == nil {
		f.Add(string(data))
	}
	for _, s := range []string{
		"", "version = 1\n", "[agent]\nagent_id = \"x\"\n", "agent = 5\n", "[agent]\nlabels = { a = 1 }\n",
		"[agent.labels]\nzone = \"a\"\n", "[agent]\nlabels.a.b = \"c\"\n", "a.b.c = 1\n", "[[agent]]\n",
		"[storage]\nstop_nodes_on_exit = true\nport_range_start = 9223372036854775807\n",
		"[monitoring]\nheartbeat_interval_secs = -9223372036854775808\n", "\"\" = 1\n", "[\"agent\"]\n\"x y\" = 2\n",
		"[agent]\nmaster_host = \"a:1, b:2 ,a:1\"\n[storage]\nmaster_binary_url = \"http://a/,https://b\"\n",
		"[agent]\nmaster_host = \",,:\"\n[storage]\nmaster_binary_url = \",\"\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse("f.toml", []byte(s), testEnv(nil))
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && cfg != nil {
			t.Fatal("config and error")
		}
		if err == nil {
			if cfg.Agent.Platform != "process" || cfg.Version != 1 || cfg.Agent.MaxStorageNodes < 1 {
				t.Fatalf("invalid config accepted: %+v", cfg)
			}
			if n := len(cfg.Agent.MasterHosts()); n < 1 || n > 16 || len(cfg.Storage.MasterBinaryURLs()) < 1 {
				t.Fatalf("accepted master_host %q (%d masters), master_binary_url %q", cfg.Agent.MasterHost, n, cfg.Storage.MasterBinaryURL)
			}
		}
	})
}

func fmtAny(v any) string { return fmt.Sprintf("%+v", v) }
