//go:build unix

package upgrade

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/agent/fetch"
	"github.com/sutragrid/sutra/agent/ratchet"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/internal/testutil"
)

// signAgent makes the test master serve a signature of version's binary.
func (m *testMaster) signAgent(t *testing.T, priv minisign.PrivateKey, version string) {
	t.Helper()
	p, a, _ := platform.Current()
	m.mu.Lock()
	data := m.bins[version]
	m.mu.Unlock()
	sig, _, err := release.Sign(priv, bytes.NewReader(data), release.Identity{Artifact: "sutra-agent", Version: version, Platform: p, Arch: a})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.sigs[m.filename(version)+release.SignatureSuffix] = sig
	m.mu.Unlock()
}

// signedUpgrader is an Upgrader whose Fetcher and swap check use pub.
func signedUpgrader(t *testing.T, f fixture, m *testMaster, pub minisign.PublicKey, opt ...func(*Options)) *Upgrader {
	t.Helper()
	text, _ := pub.MarshalText()
	keys, err := release.ParseKeys([]string{string(text)})
	if err != nil {
		t.Fatal(err)
	}
	fe, err := fetch.New(fetch.Options{BaseURL: m.srv.URL, CacheDir: f.cache, Artifact: "sutra-agent", Keys: keys,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Attempts: 2, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{DataDir: f.data, Executable: f.target, CurrentVersion: "1.0.0", Fetcher: fe, NoGuard: true,
		Logger: testLog(t), PublicKeys: []string{string(text)}}
	for _, fn := range opt {
		fn(&o)
	}
	u, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newKey(t *testing.T) (minisign.PublicKey, minisign.PrivateKey) {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// assertStays checks the running binary was not replaced and the failure
// names the signature problem.
func assertStays(t *testing.T, f fixture, before string, err error, reason release.Reason) {
	t.Helper()
	if err == nil || errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply = %v, want a signature error", err)
	}
	if got := release.ReasonOf(err); got != reason {
		t.Errorf("reason = %q (%v), want %s", got, err, reason)
	}
	if got := testutil.SHA256(mustRead(t, f.target)); got != before {
		t.Fatal("the agent executable was replaced by a binary whose signature does not verify")
	}
	s := f.state(t)
	if s.Phase != PhaseFailed || !strings.Contains(s.Message, string(reason)) {
		t.Errorf("state = %s %q, want failed naming %s (reported to the master)", s.Phase, s.Message, reason)
	}
}

func TestSignedAgentUpgradeInstalled(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.1.0")
	pub, priv := newKey(t)
	m.signAgent(t, priv, "1.1.0")
	f := install(t, "1.0.0")
	u := signedUpgrader(t, f, m, pub)
	if err := u.Apply(t.Context(), "1.1.0"); !errors.Is(err, ErrRestartRequired) {
		t.Fatalf("Apply = %v, want ErrRestartRequired", err)
	}
	if got := versionOf(t, f.target); got != "1.1.0" {
		t.Fatalf("installed %s, want 1.1.0", got)
	}
	// The new agent commits: the rollback ratchet records 1.1.0.
	book := ratchet.Open(f.data)
	u2, err := New(Options{DataDir: f.data, Executable: f.target, CurrentVersion: "1.1.0", NoGuard: true, Logger: testLog(t), Ratchet: book})
	if err != nil {
		t.Fatal(err)
	}
	if err := u2.Committed(); err != nil {
		t.Fatalf("Committed: %v", err)
	}
	if hi, err := book.Highest("sutra-agent"); err != nil || hi != "1.1.0" {
		t.Fatalf("ratchet after the commit = %q, %v; want 1.1.0", hi, err)
	}
}

func TestUnsignedAgentUpgradeRefused(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.1.0")
	pub, _ := newKey(t)
	f := install(t, "1.0.0")
	before := testutil.SHA256(mustRead(t, f.target))
	err := signedUpgrader(t, f, m, pub).Apply(t.Context(), "1.1.0")
	assertStays(t, f, before, err, release.Unsigned)
}

func TestAgentUpgradeByUnknownKeyRefused(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.1.0")
	pub, _ := newKey(t)
	_, otherPriv := newKey(t)
	m.signAgent(t, otherPriv, "1.1.0")
	f := install(t, "1.0.0")
	before := testutil.SHA256(mustRead(t, f.target))
	err := signedUpgrader(t, f, m, pub).Apply(t.Context(), "1.1.0")
	assertStays(t, f, before, err, release.UnknownKey)
}

// The cached new binary is swapped for another after it was fetched and
// checked (between --version and the install): the check right before the
// swap refuses it.
func TestAgentTamperedBeforeSwapRefused(t *testing.T) {
	m := newTestMaster(t)
	m.publish(t, "1.1.0")
	pub, priv := newKey(t)
	m.signAgent(t, priv, "1.1.0")
	f := install(t, "1.0.0")
	before := testutil.SHA256(mustRead(t, f.target))
	u := signedUpgrader(t, f, m, pub, func(o *Options) {
		o.RunVersion = func(ctx context.Context, path string) (string, error) {
			out, err := RunVersion(ctx, path)
			evil := mustRead(t, path)
			evil[len(evil)-1] ^= 1
			if werr := os.WriteFile(path, evil, 0o755); werr != nil {
				t.Error(werr)
			}
			return out, err
		}
	})
	err := u.Apply(t.Context(), "1.1.0")
	if release.ReasonOf(err) != release.BadSignature {
		t.Fatalf("Apply = %v, want refused by the signature check before the swap", err)
	}
	if got := testutil.SHA256(mustRead(t, f.target)); got != before {
		t.Fatal("a binary tampered after its check was installed")
	}
}
