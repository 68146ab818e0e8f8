// Package config loads and validates the agent's agent-config.toml.
//
// The file format is the design document's example plus the original grid's
// keys; configs/agent-config.toml documents every key with its default. A file
// may start with "version = 1"; a missing version means 1.
//
// Decoding is strict: an unknown key, a value of the wrong type or an invalid
// value is an error that names the key, its line and the accepted values, and
// every problem of a file is reported at once (errors.Join of *Problem).
//
// Precedence, lowest first: built-in defaults, the file, the environment
// (SUTRA_MASTER, SUTRA_AGENT_ID, SUTRA_CACHE_DIR, SUTRA_MASTER_BINARY_URL; an
// empty variable counts as unset). Relative paths in the file are relative to
// the directory holding the file; "~/" expands to the user's home directory.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/masters"
	"github.com/sutragrid/sutra/internal/ratespec"
	"github.com/sutragrid/sutra/internal/release"
)

// CurrentVersion is the config file format this package reads.
const CurrentVersion = 1

// Default values of the keys whose default does not depend on the machine.
const (
	DefaultMasterHost              = "localhost:7000"
	DefaultPlatform                = "process"
	DefaultMaxStorageNodes         = 4
	DefaultPortRangeStart          = 50051
	DefaultHeartbeatIntervalSecs   = 5
	DefaultHealthCheckIntervalSecs = 5
	DefaultHealthCheckTimeoutSecs  = 2
	DefaultUnhealthyThresholdSecs  = 30
	DefaultRestartMaxFailures      = 10
	DefaultRestartWindowSecs       = 300
	DefaultUpgradeWindowSecs       = 60
	DefaultLogLevel                = "info"
	DefaultLogFormat               = "text"
	// DefaultBinaryHTTPPort is the port of the master's binary distribution
	// API; master_binary_url defaults to http://<master_host's host>:7001.
	DefaultBinaryHTTPPort = "7001"
)

// Config is a loaded, defaulted and validated agent configuration.
type Config struct {
	// Version is the file format version (always CurrentVersion after Load).
	Version    int        `toml:"version"`
	Agent      Agent      `toml:"agent"`
	Storage    Storage    `toml:"storage"`
	Monitoring Monitoring `toml:"monitoring"`
	Logging    Logging    `toml:"logging"`
	Security   Security   `toml:"security"`

	// Path is the file the configuration was read from, made absolute; empty
	// when built from defaults alone.
	Path string `toml:"-"`
}

// Agent is the [agent] table.
type Agent struct {
	// AgentID names this agent to the master (default: the hostname).
	AgentID string `toml:"agent_id"`
	// MasterHost is the master's gRPC address, host:port (default
	// localhost:7000), or several masters as a comma-separated list
	// "a:7000,b:7000,c:7000" (1 to 16; a name with several DNS records
	// counts as several masters): the agent sticks to one and moves to
	// another when it is unreachable (internal/masters). MasterHosts
	// returns the parsed list.
	MasterHost string `toml:"master_host"`
	// JoinToken enrolls the agent with the master when it has no
	// certificate yet ({agent_data_dir}/tls); afterwards it is not needed.
	// It is a secret: never logged (SUTRA_JOIN_TOKEN, --join-token).
	JoinToken string `toml:"join_token"`
	// Platform is how nodes run; only "process" is supported.
	Platform string `toml:"platform"`
	// AutoDownloadBinary fetches storage-server from the master when
	// storage.binary_path is empty (default true).
	AutoDownloadBinary bool `toml:"auto_download_binary"`
	// MaxStorageNodes is the number of nodes this agent accepts (default 4).
	MaxStorageNodes int `toml:"max_storage_nodes"`
	// CacheDir holds downloaded binaries (default os.UserCacheDir()/sutra).
	CacheDir string `toml:"cache_dir"`
	// AgentDataDir is where the agent records what it runs and keeps node
	// logs (default <user data dir>/sutra/agent).
	AgentDataDir string `toml:"agent_data_dir"`
	// Labels are free-form key/values reported to the master.
	Labels map[string]string `toml:"labels"`
	// AutoUpdate makes the agent track the latest sutra-agent the master
	// serves (default false).
	AutoUpdate bool `toml:"auto_update"`
	// UpgradeWindowSecs is how long a self-updated agent has to register
	// and heartbeat before the previous binary is restored (default 60).
	UpgradeWindowSecs int `toml:"upgrade_window_secs"`
	// MetricsAddr, when set, serves the agent's Prometheus metrics on
	// http://{metrics_addr}/metrics (host:port; default off, 127.0.0.1:7002
	// in the packaged config). No authentication: keep it on loopback or a
	// trusted network.
	MetricsAddr string `toml:"metrics_addr"`
	// DownloadRateLimit caps the agent's binary downloads, like "50MB/s"
	// or "20MiB/s" (internal/ratespec); empty or "unlimited": no cap.
	DownloadRateLimit string `toml:"download_rate_limit"`
}

// DownloadRate is DownloadRateLimit in bytes per second (0: unlimited);
// Load has validated it.
func (a Agent) DownloadRate() int64 {
	v, _ := ratespec.Parse(a.DownloadRateLimit)
	return v
}

// UpgradeWindow returns upgrade_window_secs as a duration.
func (a Agent) UpgradeWindow() time.Duration {
	return time.Duration(a.UpgradeWindowSecs) * time.Second
}

// Storage is the [storage] table.
type Storage struct {
	// BinaryPath, when set, is the storage-server to run as is (no download).
	BinaryPath string `toml:"binary_path"`
	// MasterBinaryURL is the master's binary distribution API
	// (default http://<master_host's host>:7001, per master: downloads then
	// go to the master the agent currently talks to). Set explicitly, it
	// may be a comma-separated list; downloads move to another URL on a
	// connection error or a 5xx.
	MasterBinaryURL string `toml:"master_binary_url"`
	// DataPath holds one data directory per node (default <user data dir>/sutra/nodes).
	DataPath string `toml:"data_path"`
	// PortRangeStart is the first port handed to nodes (default 50051).
	PortRangeStart int `toml:"port_range_start"`
	// StopNodesOnExit says whether the agent stops its nodes when it exits.
	// Nil means unset: use StopNodesOnExitOr with the mode's default
	// (true for "sutra-agent run", false as an OS service).
	StopNodesOnExit *bool `toml:"stop_nodes_on_exit"`
}

// StopNodesOnExitOr returns stop_nodes_on_exit, or def when the key is unset.
func (s Storage) StopNodesOnExitOr(def bool) bool {
	if s.StopNodesOnExit == nil {
		return def
	}
	return *s.StopNodesOnExit
}

// Monitoring is the [monitoring] table. All durations are whole seconds.
type Monitoring struct {
	// HeartbeatIntervalSecs is used until the master names an interval (default 5).
	HeartbeatIntervalSecs int `toml:"heartbeat_interval_secs"`
	// HealthCheckIntervalSecs is the time between two /healthz probes of a node (default 5).
	HealthCheckIntervalSecs int `toml:"health_check_interval_secs"`
	// HealthCheckTimeoutSecs bounds one probe (default 2).
	HealthCheckTimeoutSecs int `toml:"health_check_timeout_secs"`
	// UnhealthyThresholdSecs: a node alive but unhealthy for longer is restarted (default 30).
	UnhealthyThresholdSecs int `toml:"unhealthy_threshold_secs"`
	// RestartFailedNodes restarts nodes that exit or turn unhealthy (default true).
	RestartFailedNodes bool `toml:"restart_failed_nodes"`
	// RestartMaxFailures failures within RestartWindowSecs put a node in
	// "failed": no more restarts until the master asks again (default 10).
	RestartMaxFailures int `toml:"restart_max_failures"`
	// RestartWindowSecs is the sliding window of RestartMaxFailures (default 300).
	RestartWindowSecs int `toml:"restart_window_secs"`
}

// HeartbeatInterval returns heartbeat_interval_secs as a duration.
func (m Monitoring) HeartbeatInterval() time.Duration {
	return time.Duration(m.HeartbeatIntervalSecs) * time.Second
}

// HealthCheckInterval returns health_check_interval_secs as a duration.
func (m Monitoring) HealthCheckInterval() time.Duration {
	return time.Duration(m.HealthCheckIntervalSecs) * time.Second
}

// HealthCheckTimeout returns health_check_timeout_secs as a duration.
func (m Monitoring) HealthCheckTimeout() time.Duration {
	return time.Duration(m.HealthCheckTimeoutSecs) * time.Second
}

// RestartWindow returns restart_window_secs as a duration.
func (m Monitoring) RestartWindow() time.Duration {
	return time.Duration(m.RestartWindowSecs) * time.Second
}

// UnhealthyThreshold returns unhealthy_threshold_secs as a duration.
func (m Monitoring) UnhealthyThreshold() time.Duration {
	return time.Duration(m.UnhealthyThresholdSecs) * time.Second
}

// Logging is the [logging] table.
type Logging struct {
	// Level is debug, info, warn or error (default info).
	Level string `toml:"level"`
	// Format is text or json (default text).
	Format string `toml:"format"`
}

// Security is the [security] table: release signatures (see
// internal/release and agent/fetch).
type Security struct {
	// ReleasePublicKeys are the minisign public keys ("RW…", or the
	// content of a sutra-release.pub) whose signatures the agent accepts
	// for storage-server and for its own self-update; several for key
	// rotation. Keys pinned here are never replaced by keys the master
	// hands out at enrollment (those are used only when none are pinned).
	ReleasePublicKeys []string `toml:"release_public_keys"`
	// ReleasePublicKeysFile names a file of release public keys (a
	// sutra-release.pub, or one "RW…" key per line; '#' comments allowed),
	// e.g. installed by the package; its keys are pinned like
	// ReleasePublicKeys and added to them.
	ReleasePublicKeysFile string `toml:"release_public_keys_file"`
	// RequireSignatures refuses binaries without a valid signature
	// (default: true whenever keys are configured). Nil means unset.
	RequireSignatures *bool `toml:"require_signatures"`
}

// Keyring parses the pinned keys (validated by Load).
func (s Security) Keyring() (release.Keyring, error) {
	keys, err := s.pinned()
	if err != nil {
		return release.Keyring{}, err
	}
	return release.ParseKeys(keys)
}

// pinned are the keys of release_public_keys and release_public_keys_file.
func (s Security) pinned() ([]string, error) {
	keys := append([]string(nil), s.ReleasePublicKeys...)
	if s.ReleasePublicKeysFile == "" {
		return keys, nil
	}
	more, err := release.ReadKeysFile(s.ReleasePublicKeysFile)
	if err != nil {
		return nil, err
	}
	return append(keys, more...), nil
}

// EnrollmentKeysFile is where the agent keeps the release public keys the
// master handed out at its first enrollment ({agent_data_dir}/tls/…; see
// agent/controlplane ReleaseKeysFile).
const EnrollmentKeysFile = "release-public-keys.txt"

// EffectiveKeys returns the release public keys the agent trusts and where
// they come from: the keys pinned in the config ("config"), else those the
// master handed out at the first enrollment ("enrollment"), else none.
// Keys pinned in the config always win and are never replaced.
func (s Security) EffectiveKeys(dataDir string) (keys []string, source string, err error) {
	if pinned, err := s.pinned(); err != nil || len(pinned) > 0 {
		return pinned, "config", err
	}
	path := filepath.Join(dataDir, "tls", EnrollmentKeysFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	keys, err = release.ReadKeysFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("release public keys from enrollment: %w", err)
	}
	if _, err := release.ParseKeys(keys); err != nil {
		return nil, "", fmt.Errorf("release public keys from enrollment (%s): %w", path, err)
	}
	return keys, "enrollment", nil
}

// EffectiveKeyring is EffectiveKeys parsed, with whether signatures are
// required (require_signatures, or by default whether there are keys).
func (s Security) EffectiveKeyring(dataDir string) (kr release.Keyring, texts []string, require bool, err error) {
	texts, _, err = s.EffectiveKeys(dataDir)
	if err != nil {
		return kr, nil, false, err
	}
	if kr, err = release.ParseKeys(texts); err != nil {
		return kr, nil, false, err
	}
	require = kr.Len() > 0
	if s.RequireSignatures != nil {
		require = *s.RequireSignatures
	}
	return kr, texts, require, nil
}

// Require reports whether signatures are required: require_signatures, or
// by default whether keys are configured.
func (s Security) Require() bool {
	if s.RequireSignatures != nil {
		return *s.RequireSignatures
	}
	return len(s.ReleasePublicKeys) > 0 || s.ReleasePublicKeysFile != ""
}

// SlogLevel returns Level as a slog.Level (info when invalid; Load rejects invalid levels).
func (l Logging) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

// defaults returns the machine-independent defaults; paths, agent_id and
// master_binary_url are filled after decoding because they depend on the
// environment and on other keys.
func defaults() Config {
	return Config{
		Version: CurrentVersion,
		Agent: Agent{
			MasterHost:         DefaultMasterHost,
			Platform:           DefaultPlatform,
			AutoDownloadBinary: true,
			MaxStorageNodes:    DefaultMaxStorageNodes,
			UpgradeWindowSecs:  DefaultUpgradeWindowSecs,
		},
		Storage: Storage{
			PortRangeStart: DefaultPortRangeStart,
		},
		Monitoring: Monitoring{
			HeartbeatIntervalSecs:   DefaultHeartbeatIntervalSecs,
			HealthCheckIntervalSecs: DefaultHealthCheckIntervalSecs,
			HealthCheckTimeoutSecs:  DefaultHealthCheckTimeoutSecs,
			UnhealthyThresholdSecs:  DefaultUnhealthyThresholdSecs,
			RestartFailedNodes:      true,
			RestartMaxFailures:      DefaultRestartMaxFailures,
			RestartWindowSecs:       DefaultRestartWindowSecs,
		},
		Logging: Logging{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
}

// BinaryURLFor returns the default master_binary_url for a master_host:
// http://<host>:7001, or for a list of masters the comma-separated list of
// each one's URL. It returns "" when masterHost is not host:port (or a
// valid list).
func BinaryURLFor(masterHost string) string {
	hosts, err := masters.ParseHosts(masterHost)
	if err != nil {
		return ""
	}
	urls := make([]string, 0, len(hosts))
	for _, h := range hosts {
		host, _, _ := net.SplitHostPort(h)
		u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, DefaultBinaryHTTPPort)}
		urls = append(urls, u.String())
	}
	return strings.Join(urls, ",")
}

// MasterHosts returns master_host parsed: one host:port per master (nil
// when it is invalid, which Load refuses).
func (a Agent) MasterHosts() []string {
	hosts, _ := masters.ParseHosts(a.MasterHost)
	return hosts
}

// MasterBinaryURLs returns master_binary_url as a list of base URLs.
func (s Storage) MasterBinaryURLs() []string {
	var out []string
	for _, u := range strings.Split(s.MasterBinaryURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// BinaryURLFollowsMaster reports whether master_binary_url is the one
// derived from master_host (it was not set, or set to the same): then
// downloads go to the master the agent currently talks to
// (BinaryURLFor(that master)).
func (c Config) BinaryURLFollowsMaster() bool {
	return c.Storage.MasterBinaryURL == BinaryURLFor(c.Agent.MasterHost)
}

// BinaryURLOf returns the binary API URL that goes with master (one of
// MasterHosts), which downloads try first while the agent talks to that
// master: the derived http://<its host>:7001 when master_binary_url is
// the default, else the URL at the same position when master_binary_url
// lists as many URLs as master_host lists masters, else "" (no
// preference).
func (c Config) BinaryURLOf(master string) string {
	if c.BinaryURLFollowsMaster() {
		return BinaryURLFor(master)
	}
	hosts, urls := c.Agent.MasterHosts(), c.Storage.MasterBinaryURLs()
	if len(hosts) < 2 || len(hosts) != len(urls) {
		return ""
	}
	for i, h := range hosts {
		if h == master {
			return urls[i]
		}
	}
	return ""
}

// Problem is one invalid key of a config file.
type Problem struct {
	File string // config file name as given
	Line int    // 1-based; 0 when unknown
	Env  string // the environment variable the value came from, if any
	Key  string // dotted key, e.g. "agent.platform"
	Msg  string // what is wrong and what is accepted
}

func (p *Problem) Error() string {
	loc := p.File
	switch {
	case p.Env != "":
		loc = "environment variable " + p.Env
	case p.Line > 0:
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if p.Key == "" {
		return fmt.Sprintf("%s: %s", loc, p.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, p.Key, p.Msg)
}
