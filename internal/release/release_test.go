package release

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"

	"aead.dev/minisign"
)

func newKey(t testing.TB) (Keyring, minisign.PrivateKey, string) {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, err := pub.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKeys([]string{string(text)})
	if err != nil {
		t.Fatal(err)
	}
	return k, priv, string(text)
}

var ident = Identity{Artifact: "storage-server", Version: "1.2.0", Platform: "linux", Arch: "x86_64"}

func TestVerify(t *testing.T) {
	k, priv, pubText := newKey(t)
	other, otherPriv, otherText := newKey(t)
	file := []byte("#!/bin/sh\necho storage-server 1.2.0\n")
	sig, signed, err := Sign(priv, bytes.NewReader(file), ident)
	if err != nil {
		t.Fatal(err)
	}
	if signed.Size != int64(len(file)) || len(signed.SHA256) != 64 {
		t.Fatalf("signed identity %+v", signed)
	}
	if got, err := k.Verify(bytes.NewReader(file), sig, ident); err != nil || got != signed {
		t.Fatalf("Verify(signed) = %+v, %v; want %+v", got, err, signed)
	}
	// Both keys configured (rotation): a signature by either verifies.
	both, err := ParseKeys([]string{pubText, "untrusted comment: minisign public key\n" + otherText})
	if err != nil || both.Len() != 2 {
		t.Fatalf("ParseKeys(two) = %d keys, %v", both.Len(), err)
	}
	sig2, _, _ := Sign(otherPriv, bytes.NewReader(file), ident)
	if _, err := both.Verify(bytes.NewReader(file), sig2, ident); err != nil {
		t.Fatalf("rotation: %v", err)
	}

	otherFile := []byte("#!/bin/sh\necho evil\n")
	otherSig, _, _ := Sign(priv, bytes.NewReader(otherFile), ident)
	v130 := ident
	v130.Version = "1.3.0"
	sigV130, _, _ := Sign(priv, bytes.NewReader(file), v130)
	darwin := ident
	darwin.Platform = "darwin"
	edited := bytes.Replace(sig, []byte("1.2.0"), []byte("1.9.0"), 1)
	cases := []struct {
		name string
		keys Keyring
		file []byte
		sig  []byte
		want Identity
		why  Reason
	}{
		{"unsigned", k, file, nil, ident, Unsigned},
		{"garbage signature", k, file, []byte("not a minisig"), ident, Malformed},
		{"unknown key", other, file, sig, ident, UnknownKey},
		{"altered file", k, append(bytes.Clone(file), '\n'), sig, ident, BadSignature},
		{"signature of another file", k, file, otherSig, ident, BadSignature},
		{"trusted comment edited", k, file, edited, ident, BadSignature},
		{"other version", k, file, sigV130, ident, Mismatch},
		{"other platform", k, file, sig, darwin, Mismatch},
		{"other checksum from the master", k, file, sig, Identity{Artifact: ident.Artifact, SHA256: strings.Repeat("a", 64)}, Mismatch},
	}
	for _, c := range cases {
		_, err := c.keys.Verify(bytes.NewReader(c.file), c.sig, c.want)
		if ReasonOf(err) != c.why {
			t.Errorf("%s: Verify = %v (reason %q), want reason %q", c.name, err, ReasonOf(err), c.why)
		}
	}
	if !bytes.Contains(edited, []byte("1.9.0")) {
		t.Fatal("the edit did not happen")
	}
}

func TestParseCommentRoundTrip(t *testing.T) {
	id := ident
	id.SHA256 = strings.Repeat("0f", 32)
	id.Size = 42
	got, err := ParseComment(id.Comment())
	if err != nil || got != id {
		t.Fatalf("ParseComment(%q) = %+v, %v", id.Comment(), got, err)
	}
	for _, bad := range []string{
		"", "timestamp:1700000000", "sutra-release a b c d sha256:00 size:1",
		"sutra-release a b c d sha256:" + strings.Repeat("A", 64) + " size:1",
		"sutra-release a b c d sha256:" + strings.Repeat("0", 64) + " size:-1",
		"sutra-release a b c d sha256:" + strings.Repeat("0", 64) + " size:01",
		"sutra-release a b c d sha256:" + strings.Repeat("0", 64) + " size:1 extra",
		"sutra-release  b c d sha256:" + strings.Repeat("0", 64) + " size:1",
	} {
		if _, err := ParseComment(bad); err == nil {
			t.Errorf("ParseComment(%q) accepted", bad)
		}
	}
}

func FuzzParseComment(f *testing.F) {
	f.Add(ident.Comment())
	f.Add("sutra-release a b c d sha256:" + strings.Repeat("0", 64) + " size:9223372036854775807")
	f.Add("sutra-release a b c d sha256:" + strings.Repeat("0", 64) + " size:9223372036854775808")
	f.Add("sutra-release \x00 b c d sha256: size:")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseComment(s)
		if err != nil {
			return
		}
		if back, err := ParseComment(id.Comment()); err != nil || back != id {
			t.Fatalf("round trip of %q: %+v, %v", s, back, err)
		}
	})
}

func FuzzVerify(f *testing.F) {
	_, priv, pubText := newKey(f)
	k, _ := ParseKeys([]string{pubText})
	sig, _, _ := Sign(priv, bytes.NewReader([]byte("x")), ident)
	f.Add([]byte("x"), sig)
	f.Add([]byte("x"), []byte("untrusted comment: x\nRW\ntrusted comment: y\nz\n"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, file, sig []byte) {
		got, err := k.Verify(bytes.NewReader(file), sig, ident)
		if err == nil && (got.Size != int64(len(file)) || got.Artifact != ident.Artifact) {
			t.Fatalf("Verify accepted a signature for %+v over %d bytes", got, len(file))
		}
	})
}
