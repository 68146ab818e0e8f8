package diagnose

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/release"
)

const testToken = "SUTRA1.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.abcdef0123.mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpiytemzuaaaa"

// testConfig parses an agent config with everything under dir and the
// master on a closed port.
func testConfig(t *testing.T, dir, extra string) *config.Config {
	t.Helper()
	body := "[agent]\nagent_id = \"a1\"\nmaster_host = \"127.0.0.1:1\"\ncache_dir = \"" + filepath.Join(dir, "cache") + "\"\nagent_data_dir = \"" +
		filepath.Join(dir, "agent") + "\"\n" + extra + "[storage]\nmaster_binary_url = \"http://127.0.0.1:1\"\ndata_path = \"" + filepath.Join(dir, "nodes") + "\"\n"
	cfg, err := config.Parse(filepath.Join(dir, "agent-config.toml"), []byte(body), config.Env{
		Getenv:       func(string) string { return "" },
		Hostname:     func() (string, error) { return "h", nil },
		UserCacheDir: func() (string, error) { return dir, nil },
		UserDataDir:  func() (string, error) { return dir, nil },
		HomeDir:      func() (string, error) { return dir, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func setting(rep ConfigReport, key string) (string, bool) {
	for _, s := range rep.Settings {
		if s.Key == key {
			return s.Value, true
		}
	}
	return "", false
}

// The configuration in effect shows every key; secret-like keys and
// secret-looking values are <redacted>, public keys are shown.
func TestConfigRedacted(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "join_token = \""+testToken+"\"\n[agent.labels]\napi_key = \"hunter2-label\"\nnote = \"pasted "+testToken+"\"\nzone = \"eu-1\"\n")
	rep := configReport(cfg, knownSecrets(cfg, nil))
	for key, want := range map[string]string{
		"agent.join_token":                Redacted,
		"agent.labels.api_key":            Redacted,
		"agent.labels.note":               Redacted,
		"agent.labels.zone":               `"eu-1"`,
		"agent.agent_id":                  `"a1"`,
		"agent.master_host":               `"127.0.0.1:1"`,
		"monitoring.restart_max_failures": "10",
		"storage.stop_nodes_on_exit":      "(unset)",
		"security.release_public_keys":    "[]",
	} {
		if got, ok := setting(rep, key); !ok || got != want {
			t.Errorf("setting %s = %q (present %v), want %q", key, got, ok, want)
		}
	}
	for _, s := range rep.Settings {
		if strings.Contains(s.Key+s.Value, "hunter2") || strings.Contains(s.Key+s.Value, testToken) {
			t.Errorf("setting %s = %s shows a secret", s.Key, s.Value)
		}
	}
	if !IsSecretKey("operator_password") || IsSecretKey("release_public_keys") || IsSecretKey("agent_id") {
		t.Error("IsSecretKey misclassifies")
	}
}

func TestRedactText(t *testing.T) {
	for _, tc := range []struct {
		in      string
		secrets []string
		want    string
	}{
		{"token=abc123 and abc123", []string{"abc123"}, "token=<redacted> and <redacted>"},
		{"xxSECRETyy", []string{"SECRET", "CRETyy"}, "xx<redacted>"},
		{"nothing here", []string{"abc"}, "nothing here"},
		{"e here", []string{"e"}, ""}, // the marker itself holds the secret
		{"aaa", []string{"aa"}, "<redacted>"},
		{"", []string{"x"}, ""},
		{"keep", []string{""}, "keep"},
	} {
		if got := RedactText(tc.in, tc.secrets); got != tc.want {
			t.Errorf("RedactText(%q, %q) = %q, want %q", tc.in, tc.secrets, got, tc.want)
		}
	}
}

// No text that contains a secret passes RedactText with the secret in it.
func FuzzRedactText(f *testing.F) {
	f.Add("token "+testToken+" end", testToken, "")
	f.Add("<redacted>", "<r", "")
	f.Add("aaaa", "aa", "a")
	f.Add("x<redy", "x<red", "y")
	f.Add("abcabc", "bca", "cab")
	f.Add("d>d>", ">d", "d>")
	f.Add("\x00\xff-----BEGIN PRIVATE KEY-----", "PRIVATE", "\xff")
	f.Fuzz(func(t *testing.T, s, a, b string) {
		secrets := []string{a, b}
		out := RedactText(s, secrets)
		for _, sec := range secrets {
			if sec != "" && strings.Contains(out, sec) {
				t.Fatalf("RedactText(%q, %q) = %q still holds %q", s, secrets, out, sec)
			}
		}
		if !containsAny(s, secrets) && out != s {
			t.Fatalf("RedactText(%q, %q) = %q changed a text without secrets", s, secrets, out)
		}
	})
}

// A corrupt cache entry is reported as a problem and left in place (the
// agent removes it when it next uses the cache); a good one is verified.
func TestCacheCorruptReportedNotRemoved(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	c, err := cache.New(cache.Options{Dir: cfg.Agent.CacheDir})
	if err != nil {
		t.Fatal(err)
	}
	put := func(version string, data []byte) string {
		t.Helper()
		if err := c.Prepare(version); err != nil {
			t.Fatal(err)
		}
		f, err := c.OpenPartial(version, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sum := sha256.Sum256(data)
		e, err := c.Commit(cache.Entry{Version: version, Checksum: hex.EncodeToString(sum[:]), Size: int64(len(data)), Platform: "linux", Arch: "x86_64"})
		if err != nil {
			t.Fatal(err)
		}
		return e.Path
	}
	put("1.0.0", []byte("good binary"))
	bad := put("1.1.0", []byte("will be changed"))
	if err := os.WriteFile(bad, []byte("tampered binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Report{}
	entries := cacheReport(context.Background(), r, cfg)
	got := map[string]CacheEntry{}
	for _, e := range entries {
		got[e.Version] = e
	}
	if e := got["1.0.0"]; !e.Verified || e.Error != "" {
		t.Errorf("1.0.0 = %+v, want verified", e)
	}
	if e := got["1.1.0"]; e.Verified || !strings.Contains(e.Error, "CORRUPT") {
		t.Errorf("1.1.0 = %+v, want CORRUPT", e)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "storage-server 1.1.0") {
		t.Errorf("problems = %q, want the corrupt entry", r.Problems)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Errorf("diagnose removed the corrupt entry: %v", err)
	}
}

// A service manager that never answers does not hold diagnose up.
func TestServiceStatusTimeout(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	block := make(chan struct{})
	defer close(block)
	start := time.Now()
	rep, err := Gather(context.Background(), Options{Config: cfg, Timeout: 300 * time.Millisecond,
		ServiceStatus: func(context.Context) (string, error) { <-block; return "running", nil },
		Systemctl:     func(context.Context) (string, error) { return "ActiveState=active\nNRestarts=3\n", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Gather took %s with a hung service manager", d)
	}
	if rep.Service.State != "unknown" || !strings.Contains(rep.Service.Error, "no answer") {
		t.Errorf("service = %+v, want unknown, no answer", rep.Service)
	}
	if rep.Service.Systemd["NRestarts"] != "3" {
		t.Errorf("systemd = %v, want NRestarts 3", rep.Service.Systemd)
	}
	// Master on a closed port; no certificate and no join token: the
	// agent's own hint.
	if rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), "no certificate and no join token") {
		t.Errorf("problems = %q, want the no-credentials hint", rep.Problems)
	}
}

// Each log is cut to its last MaxLogTail bytes and the bundle's content
// stays under MaxBundle, the files left out named in report.txt.
func TestBundleCaps(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	logs := filepath.Join(cfg.Agent.AgentDataDir, "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 1023) + "\n"
	big := []byte(strings.Repeat(line, 300)) // 300 KiB
	for i := range 70 {
		name := filepath.Join(logs, "n"+string(rune('a'+i/26))+string(rune('a'+i%26))+".log")
		if err := os.WriteFile(name, big, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Gather(context.Background(), Options{Config: cfg, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b.tar.gz")
	if err := WriteBundle(out, rep, cfg.Agent.AgentDataDir); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var total int64
	var nlogs int
	var report string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		total += int64(len(b))
		if strings.HasPrefix(h.Name, BundleLogs) {
			nlogs++
			if len(b) != MaxLogTail {
				t.Errorf("%s: %d bytes, want the last %d", h.Name, len(b), MaxLogTail)
			}
		}
		if h.Name == BundleText {
			report = string(b)
		}
	}
	if total > MaxBundle {
		t.Errorf("bundle content %d bytes, want at most %d", total, MaxBundle)
	}
	if nlogs == 0 || nlogs == 70 || !strings.Contains(report, "the bundle is full") {
		t.Errorf("%d of 70 logs in the bundle, report notes:%v; want some, the rest named", nlogs, strings.Contains(report, "the bundle is full"))
	}
}

// With release_public_keys, each cached entry's signature is checked: one
// signed by the configured key is verified, one signed by another key
// fails, one without a signature is refused (signatures required).
func TestCacheSignatures(t *testing.T) {
	dir := t.TempDir()
	pub, keyPath, _, err := release.WriteKeyPair(filepath.Join(dir, "key"), "")
	if err != nil {
		t.Fatal(err)
	}
	key, err := release.LoadPrivateKey(keyPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPath, _, err := release.WriteKeyPair(filepath.Join(dir, "other"), "")
	if err != nil {
		t.Fatal(err)
	}
	other, err := release.LoadPrivateKey(otherPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dir, "[security]\nrelease_public_keys = [\""+release.PublicKeyLine(pub)+"\"]\n")
	keys, err := cfg.Security.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.Options{Dir: cfg.Agent.CacheDir, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	put := func(version string, signer *minisign.PrivateKey) {
		t.Helper()
		data := []byte("binary " + version)
		if err := c.Prepare(version); err != nil {
			t.Fatal(err)
		}
		f, err := c.OpenPartial(version, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sum := sha256.Sum256(data)
		e := cache.Entry{Version: version, Checksum: hex.EncodeToString(sum[:]), Size: int64(len(data)), Platform: "linux", Arch: "x86_64"}
		if signer == nil {
			if _, err := c.Commit(e); err != nil {
				t.Fatal(err)
			}
			return
		}
		sig, _, err := release.Sign(*signer, strings.NewReader(string(data)),
			release.Identity{Artifact: "storage-server", Version: version, Platform: "linux", Arch: "x86_64"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CommitSigned(e, sig); err != nil {
			t.Fatal(err)
		}
	}
	put("1.0.0", &key)
	put("1.1.0", &other)
	put("1.2.0", nil)
	r := &Report{}
	got := map[string]CacheEntry{}
	for _, e := range cacheReport(context.Background(), r, cfg) {
		got[e.Version] = e
	}
	if e := got["1.0.0"]; !strings.HasPrefix(e.Signature, "verified") || e.Error != "" {
		t.Errorf("1.0.0 = %+v, want signature verified", e)
	}
	if e := got["1.1.0"]; !strings.HasPrefix(e.Signature, "FAILED") || e.Error == "" {
		t.Errorf("1.1.0 (another key) = %+v, want signature FAILED", e)
	}
	if e := got["1.2.0"]; e.Signature != "unsigned" || !strings.Contains(e.Error, "require_signatures") {
		t.Errorf("1.2.0 (unsigned) = %+v, want unsigned, refused", e)
	}
	if len(r.Problems) != 2 {
		t.Errorf("problems = %q, want 1.1.0 and 1.2.0", r.Problems)
	}
}
