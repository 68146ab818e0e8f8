package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/ratchet"
	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/internal/testutil"
)

// releaseKey is a real minisign key pair made for one test.
type releaseKey struct {
	pub  minisign.PublicKey
	priv minisign.PrivateKey
}

func newReleaseKey(t testing.TB) releaseKey {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return releaseKey{pub, priv}
}

func keyring(t testing.TB, keys ...releaseKey) release.Keyring {
	t.Helper()
	var texts []string
	for _, k := range keys {
		b, _ := k.pub.MarshalText()
		texts = append(texts, string(b))
	}
	kr, err := release.ParseKeys(texts)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// signBin signs data as storage-server version for the binary's platform.
func signBin(t testing.TB, k releaseKey, b *testBin, version string, data []byte) []byte {
	t.Helper()
	sig, _, err := release.Sign(k.priv, bytes.NewReader(data), release.Identity{
		Artifact: "storage-server", Version: version, Platform: b.info.Platform, Arch: b.info.Arch})
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// serveSig makes the test master serve sig as the binary's .minisig.
func (m *testMaster) serveSig(b *testBin, sig []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sigs[b.info.Path+release.SignatureSuffix] = sig
}

// assertRefused checks that Ensure failed with ErrSignature for reason and
// that no executable (nor partial) of version was left in the cache.
func assertRefused(t *testing.T, cacheDir, version string, err error, reasons ...release.Reason) {
	t.Helper()
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("Ensure = %v, want ErrSignature", err)
	}
	got := release.ReasonOf(err)
	ok := false
	for _, r := range reasons {
		ok = ok || got == r
	}
	if !ok {
		t.Fatalf("reason %q (%v), want one of %v", got, err, reasons)
	}
	for _, name := range []string{"storage-server" + exe(), "storage-server.partial", "meta.json"} {
		if _, serr := os.Lstat(filepath.Join(cacheDir, "storage-server", version, name)); serr == nil {
			t.Errorf("%s of a refused binary is in the cache", name)
		}
	}
	assertNothingUnverified(t, cacheDir)
}

func TestSignedBinaryIsCachedWithItsSignature(t *testing.T) {
	m := newTestMaster(t)
	k := newReleaseKey(t)
	data := payload(200<<10, 1)
	b := m.publish("1.2.0", data)
	m.serveSig(b, signBin(t, k, b, "1.2.0", data))
	dir := t.TempDir()
	f := m.fetcher(t, dir, func(o *Options) { o.Keys = keyring(t, k) })
	e, err := f.Ensure(context.Background(), Latest)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if e.SignedBy != release.KeyID(k.pub.ID()) {
		t.Errorf("SignedBy = %q, want %s", e.SignedBy, release.KeyID(k.pub.ID()))
	}
	got, err := os.ReadFile(f.Cache().SignaturePath("1.2.0"))
	if err != nil || !bytes.Equal(got, m.sigs[b.info.Path+release.SignatureSuffix]) {
		t.Fatalf("signature in the cache: %v", err)
	}
	if _, err := f.VerifyCached(context.Background(), "1.2.0"); err != nil {
		t.Fatalf("VerifyCached: %v", err)
	}
}

func TestSignatureRefusals(t *testing.T) {
	k, other := newReleaseKey(t), newReleaseKey(t)
	cases := []struct {
		name    string
		sig     func(t *testing.T, b *testBin, data []byte) []byte // nil result: unsigned
		reasons []release.Reason
	}{
		{"unsigned", func(*testing.T, *testBin, []byte) []byte { return nil }, []release.Reason{release.Unsigned}},
		{"signature of another file", func(t *testing.T, b *testBin, _ []byte) []byte {
			return signBin(t, k, b, "1.2.0", payload(200<<10, 9)) // same name and version, other bytes
		}, []release.Reason{release.Mismatch}},
		{"signature of another file, comment forged to match", func(t *testing.T, b *testBin, data []byte) []byte {
			other := signBin(t, k, b, "1.2.0", payload(100<<10, 9))
			sum := testutil.SHA256(payload(100<<10, 9))
			return bytes.Replace(other, []byte(sum), []byte(testutil.SHA256(data)), 1)
		}, []release.Reason{release.BadSignature}},
		{"signature of another version of the same bytes", func(t *testing.T, b *testBin, data []byte) []byte {
			return signBin(t, k, b, "1.1.0", data)
		}, []release.Reason{release.Mismatch}},
		{"unknown key", func(t *testing.T, b *testBin, data []byte) []byte {
			return signBin(t, other, b, "1.2.0", data)
		}, []release.Reason{release.UnknownKey}},
		{"trusted comment edited", func(t *testing.T, b *testBin, data []byte) []byte {
			sig := signBin(t, k, b, "1.1.0", data)
			return bytes.Replace(sig, []byte(" 1.1.0 "), []byte(" 1.2.0 "), 1)
		}, []release.Reason{release.BadSignature}},
		{"garbage", func(*testing.T, *testBin, []byte) []byte { return []byte("untrusted comment: x\nnot base64\n") }, []release.Reason{release.Malformed}},
		{"endless", func(*testing.T, *testBin, []byte) []byte { return bytes.Repeat([]byte("A"), 1<<20) }, []release.Reason{release.Malformed}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMaster(t)
			data := payload(100<<10, 2)
			b := m.publish("1.2.0", data)
			if sig := tc.sig(t, b, data); sig != nil {
				m.serveSig(b, sig)
			}
			dir := t.TempDir()
			f := m.fetcher(t, dir, func(o *Options) { o.Keys = keyring(t, k) })
			_, err := f.Ensure(context.Background(), Latest)
			assertRefused(t, dir, "1.2.0", err, tc.reasons...)
			binary := 0
			for _, r := range m.downloads() {
				if !strings.HasSuffix(r.Path, release.SignatureSuffix) {
					binary++
				}
			}
			if want := 0; tc.reasons[0] == release.BadSignature {
				if binary != 1 {
					t.Errorf("%d downloads of the binary, want 1 (checked, refused, not retried)", binary)
				}
			} else if binary != want {
				t.Errorf("%d downloads of the binary, want none: the signature alone says it cannot verify", binary)
			}
		})
	}
}

func TestUnsignedAllowedWhenNotRequired(t *testing.T) {
	m := newTestMaster(t)
	k := newReleaseKey(t)
	m.publish("1.0.0", payload(10<<10, 3))
	dir := t.TempDir()
	f := m.fetcher(t, dir, func(o *Options) { o.Keys, o.AllowUnsigned = keyring(t, k), true })
	e, err := f.Ensure(context.Background(), Latest)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if _, err := f.VerifyCached(context.Background(), e.Version); err != nil {
		t.Fatalf("VerifyCached: %v", err)
	}
	// A signature served is still checked.
	b := m.publish("1.1.0", payload(10<<10, 4))
	m.serveSig(b, signBin(t, newReleaseKey(t), b, "1.1.0", b.data))
	_, err = f.Ensure(context.Background(), "1.1.0")
	assertRefused(t, dir, "1.1.0", err, release.UnknownKey)
}

func TestKeyRotation(t *testing.T) {
	m := newTestMaster(t)
	old, cur := newReleaseKey(t), newReleaseKey(t)
	b1 := m.publish("1.0.0", payload(10<<10, 5))
	m.serveSig(b1, signBin(t, old, b1, "1.0.0", b1.data))
	b2 := m.publish("1.1.0", payload(10<<10, 6))
	m.serveSig(b2, signBin(t, cur, b2, "1.1.0", b2.data))
	dir := t.TempDir()
	f := m.fetcher(t, dir, func(o *Options) { o.Keys = keyring(t, old, cur) })
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := f.Ensure(context.Background(), v); err != nil {
			t.Fatalf("Ensure %s: %v", v, err)
		}
	}
	// Once the old key is retired from the config, what it signed is no
	// longer run: re-verified from the cache, refused, fetched again, refused.
	f2 := m.fetcher(t, dir, func(o *Options) { o.Keys = keyring(t, cur) })
	if _, err := f2.VerifyCached(context.Background(), "1.0.0"); release.ReasonOf(err) != release.UnknownKey || !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("VerifyCached of a release by a retired key = %v, want unknown-key", err)
	}
	if _, err := f2.VerifyCached(context.Background(), "1.1.0"); err != nil {
		t.Fatalf("VerifyCached 1.1.0: %v", err)
	}
}

// TestTamperedCacheIsRefusedAndFetchedAgain: whoever can write the cache
// replaces the executable and rewrites meta.json to match; the checksum
// check alone is fooled, the signature is not.
func TestTamperedCacheIsRefusedAndFetchedAgain(t *testing.T) {
	m := newTestMaster(t)
	k := newReleaseKey(t)
	data := payload(50<<10, 7)
	b := m.publish("1.2.0", data)
	m.serveSig(b, signBin(t, k, b, "1.2.0", data))
	dir := t.TempDir()
	f := m.fetcher(t, dir, func(o *Options) { o.Keys = keyring(t, k) })
	e, err := f.Ensure(context.Background(), "1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	evil := []byte("#!/bin/sh\necho owned\n")
	if err := os.WriteFile(e.Path, evil, 0o755); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(filepath.Dir(e.Path), cache.MetaFile)
	var meta map[string]any
	raw, _ := os.ReadFile(metaPath)
	_ = json.Unmarshal(raw, &meta)
	meta["checksum"], meta["size_bytes"] = testutil.SHA256(evil), len(evil)
	raw, _ = json.Marshal(meta)
	if err := os.WriteFile(metaPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = f.VerifyCached(context.Background(), "1.2.0")
	if !errors.Is(err, cache.ErrCorrupt) || release.ReasonOf(err) == "" {
		t.Fatalf("VerifyCached of a tampered binary = %v, want ErrCorrupt with a signature reason", err)
	}
	if _, err := os.Lstat(e.Path); err == nil {
		t.Fatal("the tampered binary is still at the executable path")
	}
	before := len(m.downloads())
	e2, err := f.Ensure(context.Background(), "1.2.0")
	if err != nil {
		t.Fatalf("Ensure after tampering: %v", err)
	}
	if got, _ := os.ReadFile(e2.Path); !bytes.Equal(got, data) {
		t.Fatal("the re-fetched binary is not the signed one")
	}
	if len(m.downloads()) == before {
		t.Fatal("not fetched again")
	}

	// A signature removed from the cache: refused too.
	if err := os.Remove(f.Cache().SignaturePath("1.2.0")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.VerifyCached(context.Background(), "1.2.0"); release.ReasonOf(err) != release.Unsigned {
		t.Fatalf("VerifyCached without its signature = %v, want unsigned", err)
	}
}

// TestLatestRollbackRefused: once 1.2.0 was committed, a master offering
// 1.1.0 as "latest" is refused; 1.1.0 asked for explicitly is allowed.
func TestLatestRollbackRefused(t *testing.T) {
	m := newTestMaster(t)
	k := newReleaseKey(t)
	for i, v := range []string{"1.1.0", "1.2.0"} {
		b := m.publish(v, payload(10<<10, byte(20+i)))
		m.serveSig(b, signBin(t, k, b, v, b.data))
	}
	dir, data := t.TempDir(), t.TempDir()
	book := ratchet.Open(data)
	f := m.fetcher(t, dir, func(o *Options) { o.Keys, o.Ratchet = keyring(t, k), book })
	if e, err := f.Ensure(context.Background(), Latest); err != nil || e.Version != "1.2.0" {
		t.Fatalf("Ensure latest = %v, %v", e.Version, err)
	}
	if hi, _ := book.Highest("storage-server"); hi != "" {
		t.Fatalf("a download alone raised the ratchet to %q (only a node running it commits)", hi)
	}
	if _, err := book.Record("storage-server", "1.2.0"); err != nil { // a node ran 1.2.0
		t.Fatal(err)
	}
	// The master (compromised, or a replayed old one) now says 1.1.0 is latest.
	m.mu.Lock()
	delete(m.bins, "1.2.0")
	m.mu.Unlock()
	f = m.fetcher(t, t.TempDir(), func(o *Options) { o.Keys, o.Ratchet = keyring(t, k), ratchet.Open(data) })
	_, err := f.Ensure(context.Background(), Latest)
	if !errors.Is(err, ratchet.ErrRollback) || !strings.Contains(err.Error(), "already committed 1.2.0") {
		t.Fatalf("Ensure latest after rollback = %v, want ErrRollback", err)
	}
	if e, err := f.Ensure(context.Background(), "1.1.0"); err != nil || e.Version != "1.1.0" {
		t.Fatalf("explicit downgrade = %v, %v; want allowed", e.Version, err)
	}
	if hi, _ := book.Highest("storage-server"); hi != "1.2.0" {
		t.Fatalf("ratchet = %q after an explicit downgrade, want 1.2.0 kept", hi)
	}
}

// TestSignedDownloadResumedAndRestarted: the signature is checked while
// the bytes stream in, across a resume (the kept prefix is fed first) and a
// restart from zero (the server ignores Range).
func TestSignedDownloadResumedAndRestarted(t *testing.T) {
	for _, restart := range []bool{false, true} {
		m := newTestMaster(t)
		k := newReleaseKey(t)
		data := payload(3<<20, 11)
		b := m.publish("1.2.0", data)
		m.serveSig(b, signBin(t, k, b, "1.2.0", data))
		calls := 0
		m.onDownload = func(w http.ResponseWriter, r *http.Request, b *testBin, _ int) bool {
			calls++
			if calls == 1 {
				w.Header().Set("ETag", `"`+testutil.SHA256(b.data)+`"`)
				w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
				w.Write(b.data[:len(b.data)/2])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			if restart {
				r.Header.Del("Range")
			}
			return false
		}
		f := m.fetcher(t, t.TempDir(), func(o *Options) { o.Keys = keyring(t, k) })
		e, err := f.Ensure(context.Background(), Latest)
		if err != nil {
			t.Fatalf("restart=%v: Ensure: %v", restart, err)
		}
		if e.SignedBy == "" || calls < 2 {
			t.Fatalf("restart=%v: signed by %q after %d downloads", restart, e.SignedBy, calls)
		}
	}
}
