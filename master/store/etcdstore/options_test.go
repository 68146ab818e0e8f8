package etcdstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseEndpoints(t *testing.T) {
	good := []struct {
		in   string
		want []string
	}{
		{"https://a:2379", []string{"https://a:2379"}},
		{" https://a:2379 , https://B:2379,https://c.example:2379/ ", []string{"https://a:2379", "https://b:2379", "https://c.example:2379"}},
		{"http://127.0.0.1:2379,http://[::1]:2379", []string{"http://127.0.0.1:2379", "http://[::1]:2379"}},
		{"HTTPS://a:1", []string{"https://a:1"}},
	}
	for _, g := range good {
		got, err := ParseEndpoints(g.in)
		if err != nil || !slices.Equal(got, g.want) {
			t.Errorf("ParseEndpoints(%q) = %q, %v; want %q", g.in, got, err, g.want)
		}
	}
	for _, bad := range []string{
		"", " ", ",", "https://a:2379,", "a:2379", "unix:///run/etcd.sock", "ftp://a:21",
		"https://a", "https://a:0", "https://a:65536", "https://a:02379", "https://:2379",
		"https://user:pw@a:2379", "https://a:2379/path", "https://a:2379?x=1", "https://a:2379#f",
		"https://a:2379,https://a:2379", "https://a:2379,https://A:2379", "http://a:2379,https://b:2379",
		"https://a b:2379", "https://a:2379\x00", "https://a%2f:2379",
		strings.Repeat("https://a:2379,", 17),
		"https://" + strings.Repeat("a", 400) + ":2379",
	} {
		if got, err := ParseEndpoints(bad); err == nil {
			t.Errorf("ParseEndpoints(%q) = %q, want an error", bad, got)
		}
	}
	var eps []string
	for i := range 16 {
		eps = append(eps, "https://h"+string(rune('a'+i))+":2379")
	}
	if _, err := ParseEndpoints(strings.Join(eps, ",")); err != nil {
		t.Errorf("ParseEndpoints(16 endpoints) = %v", err)
	}
}

// FuzzParseEndpoints: never panics; what it accepts is at most 16 distinct
// scheme://host:port URLs of one scheme that parse again to themselves.
func FuzzParseEndpoints(f *testing.F) {
	for _, s := range []string{
		"https://a:2379", "http://127.0.0.1:2379,http://[::1]:2379", "", ",,,", "https://a:2379,https://a:2379",
		"https://[::1%25eth0]:2379", "https://a:99999", "https://a:-1", "http://a:1/x", "\xff\xfe", "https://@:1",
		"https://a:2379,http://b:2379", strings.Repeat("https://a:1,", 20), "  https://A:1  ", "https://[::1]]:1",
		"javascript:alert(1)", "https://a:2379/%2e%2e", "//a:1", "https://a:1:2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		eps, err := ParseEndpoints(s)
		if err != nil {
			return
		}
		if len(eps) == 0 || len(eps) > MaxEndpoints {
			t.Fatalf("ParseEndpoints(%q) = %d endpoints", s, len(eps))
		}
		seen := map[string]bool{}
		for _, ep := range eps {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" || u.Hostname() == "" || u.Path != "" || u.User != nil {
				t.Fatalf("ParseEndpoints(%q) accepted %q", s, ep)
			}
			if seen[ep] {
				t.Fatalf("ParseEndpoints(%q) returned %q twice", s, ep)
			}
			seen[ep] = true
			if u.Scheme != strings.SplitN(eps[0], ":", 2)[0] {
				t.Fatalf("ParseEndpoints(%q) mixes schemes: %q", s, eps)
			}
		}
		again, err := ParseEndpoints(strings.Join(eps, ","))
		if err != nil || !slices.Equal(again, eps) {
			t.Fatalf("ParseEndpoints(its own output %q) = %q, %v", eps, again, err)
		}
	})
}

// FuzzValidatePrefix: an accepted prefix starts and ends with "/" and is
// printable ASCII; keys under it never collide across tables.
func FuzzValidatePrefix(f *testing.F) {
	for _, s := range []string{"/sutra/", "/", "", "sutra/", "/sutra", "/a b/", "/\x00/", "/é/", strings.Repeat("/", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if ValidatePrefix(p) != nil {
			return
		}
		if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || len(p) > 128 {
			t.Fatalf("ValidatePrefix(%q) accepted", p)
		}
		if strings.HasPrefix(TablePrefix(p, "agents"), TablePrefix(p, "agent")) {
			t.Fatalf("table prefixes overlap under %q", p)
		}
	})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadTLS(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd client"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile := writeFile(t, dir, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile := writeFile(t, dir, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	junk := writeFile(t, dir, "junk.pem", []byte("not pem"))

	cfg, err := LoadTLS(certFile, keyFile, certFile)
	if err != nil || len(cfg.Certificates) != 1 || cfg.RootCAs == nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("LoadTLS(cert, key, ca) = %+v, %v", cfg, err)
	}
	if cfg, err := LoadTLS("", "", certFile); err != nil || len(cfg.Certificates) != 0 || cfg.RootCAs == nil {
		t.Errorf("LoadTLS(CA only) = %+v, %v; want server verification only", cfg, err)
	}
	if cfg, err := LoadTLS("", "", ""); err != nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("LoadTLS(nothing) = %+v, %v; want system roots, TLS 1.2", cfg, err)
	}
	for _, bad := range [][3]string{
		{certFile, "", ""}, {"", keyFile, ""}, {certFile, certFile, ""}, {"", "", junk},
		{filepath.Join(dir, "missing"), keyFile, ""}, {"", "", filepath.Join(dir, "missing")},
	} {
		if _, err := LoadTLS(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("LoadTLS(%q) = nil error", bad)
		}
	}
	huge := writeFile(t, dir, "huge.pem", make([]byte, maxPEM+1))
	if _, err := LoadTLS("", "", huge); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("LoadTLS(huge CA) = %v, want a size refusal", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (&Options{Endpoints: []string{"https://a:2379"}}).Validate(); err != nil {
		t.Errorf("Validate(endpoints only) = %v, want the defaults to do", err)
	}
	err := (&Options{Endpoints: []string{"ftp://a:1"}, Prefix: "x", Password: "p"}).Validate()
	for _, want := range []string{"scheme", "prefix", "password without a username"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(three problems) = %v, want it to report %q too", err, want)
		}
	}
	if err := (&Options{Endpoints: []string{"http://127.0.0.1:2379"}, Username: "u", Password: "p"}).Validate(); err != nil {
		t.Errorf("Validate(password to a loopback etcd) = %v", err)
	}
}
