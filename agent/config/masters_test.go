package config

import (
	"slices"
	"strings"
	"testing"
)

// Issue 16: master_host may list several masters; master_binary_url then
// defaults to one URL per master (downloads follow the current master).
func TestSeveralMasters(t *testing.T) {
	cfg, err := Parse("a.toml", []byte("[agent]\nmaster_host = \" m1:7000, m2:7100 ,m1:7000,[::1]:7000\"\n"), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Agent.MasterHosts(), []string{"m1:7000", "m2:7100", "[::1]:7000"}; !slices.Equal(got, want) {
		t.Errorf("MasterHosts() = %q, want %q", got, want)
	}
	if got, want := cfg.Storage.MasterBinaryURL, "http://m1:7001,http://m2:7001,http://[::1]:7001"; got != want {
		t.Errorf("master_binary_url = %q, want %q", got, want)
	}
	if !cfg.BinaryURLFollowsMaster() {
		t.Error("BinaryURLFollowsMaster() = false for the derived URLs")
	}
	// SUTRA_MASTER with a list replaces the file's and the derived URLs follow.
	cfg, err = Parse("a.toml", []byte("[agent]\nmaster_host = \"old:7000\"\n[storage]\nmaster_binary_url = \"http://old:7001\"\n"),
		testEnv(map[string]string{EnvMaster: "x:7000,y:7000"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Storage.MasterBinaryURLs(), []string{"http://x:7001", "http://y:7001"}; !slices.Equal(got, want) {
		t.Errorf("MasterBinaryURLs() = %q, want %q", got, want)
	}
	// An explicit list is kept (trimmed) and does not follow the master.
	cfg, err = Parse("a.toml", []byte("[agent]\nmaster_host = \"x:7000,y:7000\"\n[storage]\nmaster_binary_url = \"https://cdn1/ , https://cdn2\"\n"), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Storage.MasterBinaryURL; got != "https://cdn1,https://cdn2" || cfg.BinaryURLFollowsMaster() {
		t.Errorf("master_binary_url = %q (follows master %v), want the explicit list", got, cfg.BinaryURLFollowsMaster())
	}
	// Lists of the same length pair up by position.
	if got := cfg.BinaryURLOf("y:7000"); got != "https://cdn2" {
		t.Errorf("BinaryURLOf(y:7000) = %q, want the second URL", got)
	}
	if got := cfg.BinaryURLOf("z:7000"); got != "" {
		t.Errorf("BinaryURLOf(z:7000) = %q, want none", got)
	}
	cfg.Storage.MasterBinaryURL = "https://cdn1"
	if got := cfg.BinaryURLOf("x:7000"); got != "" {
		t.Errorf("BinaryURLOf with one explicit URL = %q, want none (nothing to prefer)", got)
	}
	cfg, _ = Parse("a.toml", []byte("[agent]\nmaster_host = \"x:7000,y:7000\"\n"), testEnv(nil))
	if got := cfg.BinaryURLOf("y:7000"); got != "http://y:7001" {
		t.Errorf("BinaryURLOf(y:7000) with the default URLs = %q, want http://y:7001", got)
	}
	for _, tc := range []struct{ file, want string }{
		{"[agent]\nmaster_host = \"a:7000,b\"\n", `agent.master_host: "a:7000,b" entry 2 "b" is not host:port`},
		{"[agent]\nmaster_host = \"a:7000,,b:7000\"\n", `entry 2 is empty`},
		{"[agent]\nmaster_host = \"" + strings.Repeat("a:1,", 70) + "a:1\"\n", `entries (accepted: at most 16)`},
		{"[storage]\nmaster_binary_url = \"http://a,ftp://b\"\n", `storage.master_binary_url: entry 2 "ftp://b" must start with http://`},
	} {
		_, err := Parse("a.toml", []byte(tc.file), testEnv(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%.60q) = %v, want an error containing %q", tc.file, err, tc.want)
		}
	}
}
