package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/internal/masters"
	"github.com/sutragrid/sutra/internal/ratespec"
)

// SupportedPlatforms are the accepted values of agent.platform.
var SupportedPlatforms = []string{"process"}

// plannedPlatforms are recognised values of agent.platform that are not implemented.
var plannedPlatforms = []string{"docker", "container", "kubernetes", "k8s", "systemd"}

// LogLevels are the accepted values of logging.level.
var LogLevels = []string{"debug", "info", "warn", "error"}

// LogFormats are the accepted values of logging.format.
var LogFormats = []string{"text", "json"}

func applyEnv(cfg *Config, d *decoder, env Env) {
	fileMaster := cfg.Agent.MasterHost
	if v := env.Getenv(EnvMaster); v != "" {
		cfg.Agent.MasterHost = v
		d.envKeys["agent.master_host"] = EnvMaster
		// The design document's example names the binary URL next to the
		// master; when the file's URL is the one derived from the file's
		// master, follow SUTRA_MASTER instead of pointing at the old host.
		if u := cfg.Storage.MasterBinaryURL; u != "" && env.Getenv(EnvMasterBinaryURL) == "" &&
			strings.TrimSuffix(u, "/") == BinaryURLFor(fileMaster) {
			cfg.Storage.MasterBinaryURL = ""
		}
	}
	if v := env.Getenv(EnvJoinToken); v != "" {
		cfg.Agent.JoinToken = v
		d.envKeys["agent.join_token"] = EnvJoinToken
	}
	if v := env.Getenv(EnvAgentID); v != "" {
		cfg.Agent.AgentID = v
		d.envKeys["agent.agent_id"] = EnvAgentID
	}
	if v := env.Getenv(EnvCacheDir); v != "" {
		if abs, err := filepath.Abs(v); err == nil {
			v = abs
		}
		cfg.Agent.CacheDir = v
		d.envKeys["agent.cache_dir"] = EnvCacheDir
	}
	if v := env.Getenv(EnvMasterBinaryURL); v != "" {
		cfg.Storage.MasterBinaryURL = v
		d.envKeys["storage.master_binary_url"] = EnvMasterBinaryURL
	}
}

func fillDefaults(cfg *Config, d *decoder, env Env) {
	if cfg.Agent.AgentID == "" {
		h, err := env.Hostname()
		if err != nil || h == "" {
			d.problem("agent.agent_id", "not set and the hostname is unavailable (%v): set agent_id or %s", err, EnvAgentID)
		}
		cfg.Agent.AgentID = h
	}
	if cfg.Storage.MasterBinaryURL == "" {
		cfg.Storage.MasterBinaryURL = BinaryURLFor(cfg.Agent.MasterHost)
	}
	cfg.Storage.MasterBinaryURL = trimURLs(cfg.Storage.MasterBinaryURL)

	base := ""
	if cfg.Path != "" {
		base = filepath.Dir(cfg.Path)
	}
	resolve := func(key string, p *string) {
		if *p == "" {
			return
		}
		if *p == "~" || strings.HasPrefix(*p, "~/") || strings.HasPrefix(*p, `~\`) {
			home, err := env.HomeDir()
			if err != nil {
				d.problem(key, "cannot expand ~: %v", err)
				return
			}
			*p = filepath.Join(home, (*p)[1:])
		}
		if !filepath.IsAbs(*p) && base != "" && d.envKeys[key] == "" {
			*p = filepath.Join(base, *p)
		}
		*p = filepath.Clean(*p)
	}
	resolve("agent.cache_dir", &cfg.Agent.CacheDir)
	resolve("agent.agent_data_dir", &cfg.Agent.AgentDataDir)
	resolve("storage.data_path", &cfg.Storage.DataPath)
	resolve("storage.binary_path", &cfg.Storage.BinaryPath)

	if cfg.Agent.CacheDir == "" {
		dir, err := env.UserCacheDir()
		if err != nil || dir == "" {
			dir = systemDir("cache")
		}
		cfg.Agent.CacheDir = filepath.Join(dir, "sutra")
	}
	if cfg.Agent.AgentDataDir == "" || cfg.Storage.DataPath == "" {
		dir, err := env.UserDataDir()
		if err != nil || dir == "" {
			dir = systemDir("data")
		}
		if cfg.Agent.AgentDataDir == "" {
			cfg.Agent.AgentDataDir = filepath.Join(dir, "sutra", "agent")
		}
		if cfg.Storage.DataPath == "" {
			cfg.Storage.DataPath = filepath.Join(dir, "sutra", "nodes")
		}
	}
	if cfg.Agent.Labels == nil {
		cfg.Agent.Labels = map[string]string{}
	}
}

func (d *decoder) validate(cfg *Config) {
	if cfg.Version != CurrentVersion {
		d.problem("version", "unsupported config version %d (accepted: %d)", cfg.Version, CurrentVersion)
	}

	a := cfg.Agent
	if a.AgentID != "" {
		// The master applies the same rule (internal/ident).
		if err := ident.Validate("agent", a.AgentID); err != nil {
			d.problem("agent.agent_id", "%.140q is not a valid agent id (accepted: %s)", a.AgentID, ident.Charset)
		}
	}
	if a.JoinToken != "" {
		// jointoken.Parse never quotes the secret in its errors.
		if _, err := jointoken.Parse(a.JoinToken); err != nil {
			d.problem("agent.join_token", "%v (copy the whole token 'sutra tokens create' printed on the master)", err)
		}
	}
	if _, err := masters.ParseHosts(a.MasterHost); err != nil {
		d.problem("agent.master_host", "%.200q %v", a.MasterHost, err)
	}
	switch {
	case a.Platform == "process":
	case contains(plannedPlatforms, a.Platform):
		d.problem("agent.platform", "%q is not supported yet (accepted: %s)", a.Platform, strings.Join(SupportedPlatforms, ", "))
	default:
		d.problem("agent.platform", "unknown platform %q (accepted: %s)", a.Platform, strings.Join(SupportedPlatforms, ", "))
	}
	if a.MaxStorageNodes < 1 || a.MaxStorageNodes > limits.MaxStorageNodes {
		d.problem("agent.max_storage_nodes", "%d is out of range (accepted: 1 to %d)", a.MaxStorageNodes, limits.MaxStorageNodes)
	}
	if a.MetricsAddr != "" {
		if msg := checkHostPort(a.MetricsAddr); msg != "" {
			d.problem("agent.metrics_addr", "%q %s (accepted: host:port, e.g. \"127.0.0.1:7002\", or empty for none)", a.MetricsAddr, msg)
		}
	}
	if _, err := ratespec.Parse(a.DownloadRateLimit); err != nil {
		d.problem("agent.download_rate_limit", "%v (accepted: a rate like \"50MB/s\" or \"20MiB/s\", or \"unlimited\")", err)
	}
	if a.UpgradeWindowSecs < 5 || a.UpgradeWindowSecs > 86400 {
		d.problem("agent.upgrade_window_secs", "%d is out of range (accepted: 5 to 86400 seconds)", a.UpgradeWindowSecs)
	}
	// The master applies the same limits (internal/limits).
	if len(a.Labels) > limits.MaxLabels {
		d.problem("agent.labels", "%d labels (accepted: at most %d)", len(a.Labels), limits.MaxLabels)
	}
	for k, v := range a.Labels {
		if limits.Label(k, v) != nil {
			d.problem("agent.labels", "label %.80q = %.80q is invalid (accepted: keys of 1-%d bytes and values of up to %d bytes, printable UTF-8)",
				k, v, limits.MaxLabelKeyLen, limits.MaxLabelValueLen)
		}
	}

	s := cfg.Storage
	if s.BinaryPath == "" && !a.AutoDownloadBinary {
		d.problem("agent.auto_download_binary", "is false and storage.binary_path is empty, so there is no storage-server to run (set binary_path, or auto_download_binary = true)")
	}
	if s.BinaryPath != "" && runtime.GOOS == "windows" && !strings.EqualFold(filepath.Ext(s.BinaryPath), ".exe") {
		d.problem("storage.binary_path", "%q must end in .exe on Windows", s.BinaryPath)
	}
	if urls := strings.Split(s.MasterBinaryURL, ","); len(urls) > masters.MaxHosts {
		d.problem("storage.master_binary_url", "has %d URLs (accepted: at most %d)", len(urls), masters.MaxHosts)
	} else {
		for i, u := range urls {
			u = strings.TrimSpace(u)
			if msg := checkURL(u); msg != "" {
				entry := ""
				if len(urls) > 1 {
					entry = fmt.Sprintf("entry %d ", i+1)
				}
				d.problem("storage.master_binary_url", "%s%.200q %s (accepted: an http:// or https:// URL, e.g. \"http://localhost:7001\", or a comma-separated list of them)", entry, u, msg)
			}
		}
	}
	if s.PortRangeStart < 1 || s.PortRangeStart > 65535 {
		d.problem("storage.port_range_start", "%d is out of range (accepted: 1 to 65535)", s.PortRangeStart)
	} else if s.PortRangeStart+a.MaxStorageNodes-1 > 65535 {
		// The message names real ports only (never one above 65535).
		d.problem("storage.port_range_start", "%d leaves no room for %d nodes (ports %d-65535 hold %d; accepted: up to %d)",
			s.PortRangeStart, a.MaxStorageNodes, s.PortRangeStart, 65536-s.PortRangeStart, 65536-a.MaxStorageNodes)
	}

	m := cfg.Monitoring
	for _, c := range []struct {
		key string
		v   int
	}{
		{"monitoring.heartbeat_interval_secs", m.HeartbeatIntervalSecs},
		{"monitoring.health_check_interval_secs", m.HealthCheckIntervalSecs},
		{"monitoring.health_check_timeout_secs", m.HealthCheckTimeoutSecs},
		{"monitoring.unhealthy_threshold_secs", m.UnhealthyThresholdSecs},
		{"monitoring.restart_window_secs", m.RestartWindowSecs},
	} {
		if c.v < 1 || c.v > 86400 {
			d.problem(c.key, "%d is out of range (accepted: 1 to 86400 seconds)", c.v)
		}
	}
	if m.RestartMaxFailures < 1 || m.RestartMaxFailures > 1000 {
		d.problem("monitoring.restart_max_failures", "%d is out of range (accepted: 1 to 1000)", m.RestartMaxFailures)
	}

	if !contains(LogLevels, cfg.Logging.Level) {
		d.problem("logging.level", "unknown level %q (accepted: %s)", cfg.Logging.Level, strings.Join(LogLevels, ", "))
	}
	if !contains(LogFormats, cfg.Logging.Format) {
		d.problem("logging.format", "unknown format %q (accepted: %s)", cfg.Logging.Format, strings.Join(LogFormats, ", "))
	}
	if _, err := cfg.Security.Keyring(); err != nil {
		key := "security.release_public_keys"
		if cfg.Security.ReleasePublicKeysFile != "" {
			key = "security.release_public_keys_file"
		}
		d.problem(key, "%v (accepted: minisign public keys, the \"RW…\" line of a sutra-release.pub)", err)
	}
	if cfg.Security.Require() && len(cfg.Security.ReleasePublicKeys) == 0 && cfg.Security.ReleasePublicKeysFile == "" {
		d.problem("security.require_signatures", "is true but security.release_public_keys is empty: add the release public key(s)")
	}
}

func checkHostPort(hp string) string {
	if strings.Contains(hp, "://") {
		return "is a URL, not host:port"
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "is not host:port"
	}
	if host == "" {
		return "has no host"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "has an invalid port"
	}
	return ""
}

func checkURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "is not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "must start with http:// or https://"
	case u.Hostname() == "":
		return "has no host"
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "must not carry credentials, a query or a fragment"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "has an invalid port"
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// trimURLs trims blanks around each URL of a comma-separated list and a
// trailing slash from each.
func trimURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, u := range urls {
		urls[i] = strings.TrimSuffix(strings.TrimSpace(u), "/")
	}
	return strings.Join(urls, ",")
}
