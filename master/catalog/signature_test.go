package catalog

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/internal/testutil"
)

// signFor returns a real release signature of data under name's identity.
func signFor(t *testing.T, priv minisign.PrivateKey, name string, data []byte) []byte {
	t.Helper()
	id, err := release.IdentityOfFile(name)
	if err != nil {
		t.Fatal(err)
	}
	sig, _, err := release.Sign(priv, bytes.NewReader(data), id)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func genKey(t *testing.T) minisign.PrivateKey {
	t.Helper()
	_, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// Issue 13: FILE.minisig beside a binary is attached to it (at start-up and
// when it appears later, before or after its binary), replaced when it
// changes and dropped when it disappears, all picked up by the watcher.
func TestSignatureWatched(t *testing.T) {
	dir := t.TempDir()
	signed, later := "storage-server-1.0.0-linux-x86_64", "storage-server-1.1.0-linux-x86_64"
	data := []byte("binary one")
	k1, k2 := genKey(t), genKey(t)
	writeOld(t, dir, signed, data)
	writeOld(t, dir, signed+release.SignatureSuffix, signFor(t, k1, signed, data))
	c := open(t, testOptions(dir, t.TempDir()))

	sigOf := func(name string) (string, string) {
		b, _ := c.ByFilename(name)
		return b.Signature, b.SignatureKeyID
	}
	if s, id := sigOf(signed); s != signed+".minisig" || id != release.KeyID(k1.ID()) {
		t.Fatalf("at start-up: Signature %q key %q, want %s.minisig by %s", s, id, signed, release.KeyID(k1.ID()))
	}
	got, ok := c.Signature(signed)
	if want, _ := os.ReadFile(filepath.Join(dir, signed+".minisig")); !ok || !bytes.Equal(got.Data, want) || got.Name != signed+".minisig" || len(got.ETag) != 64 {
		t.Fatalf("Signature() = %+v, %v", got, ok)
	}

	// Re-signed with another key (replaced by rename, as sutra release sign does).
	if err := atomicfile.Write(filepath.Join(dir, signed+".minisig"), signFor(t, k2, signed, data), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the new signature", func() bool { _, id := sigOf(signed); return id == release.KeyID(k2.ID()) })

	// Removed: the binary stays published, unsigned.
	if err := os.Remove(filepath.Join(dir, signed+".minisig")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the signature to go", func() bool { s, _ := sigOf(signed); return s == "" })
	if _, ok := c.Signature(signed); ok {
		t.Fatal("Signature() still answers after the file was removed")
	}
	if _, ok := c.ByFilename(signed); !ok {
		t.Fatal("removing the signature withdrew the binary")
	}

	// Appearing later beside a published binary (a plain write, not a rename).
	if err := os.WriteFile(filepath.Join(dir, signed+".minisig"), signFor(t, k1, signed, data), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the signature written later", func() bool { _, id := sigOf(signed); return id == release.KeyID(k1.ID()) })

	// A signature that arrives before its binary is attached when the binary is published.
	later1 := []byte("binary 1.1")
	if err := atomicfile.Write(filepath.Join(dir, later+".minisig"), signFor(t, k1, later, later1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Signature(later); ok {
		t.Fatal("Signature() answers for a binary that is not published")
	}
	writeOld(t, dir, later, later1)
	testutil.WaitFor(t, 10*time.Second, "1.1.0 published and signed", func() bool { s, _ := sigOf(later); return s == later+".minisig" })
	if b, ok := c.Latest("storage-server", "linux", "x86_64"); !ok || b.Signature != later+".minisig" {
		t.Fatalf("Latest = %+v, want the signature on it", b)
	}
}

// Issue 13: a .minisig that is a FIFO, a symlink out of the directory, larger
// than release.MaxSignatureSize or not a minisign signature is refused
// (skipped, with the reason) and never attached; a FIFO never blocks.
func TestSignatureHardening(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	priv := genKey(t)
	names := map[string]string{
		"fifo":     "storage-server-1.0.0-linux-x86_64",
		"symlink":  "storage-server-1.1.0-linux-x86_64",
		"big":      "storage-server-1.2.0-linux-x86_64",
		"garbage":  "storage-server-1.3.0-linux-x86_64",
		"empty":    "storage-server-1.4.0-linux-x86_64",
		"good":     "storage-server-1.5.0-linux-x86_64",
		"orphaned": "storage-server-9.9.9-linux-x86_64", // no binary
	}
	for kind, name := range names {
		if kind != "orphaned" {
			writeOld(t, dir, name, []byte(name))
		}
	}
	sigPath := func(kind string) string { return filepath.Join(dir, names[kind]+release.SignatureSuffix) }
	if err := testutil.Mkfifo(sigPath("fifo"), 0o644); err != nil && runtime.GOOS != "windows" {
		t.Fatal(err)
	}
	real := filepath.Join(outside, "x.minisig")
	if err := os.WriteFile(real, signFor(t, priv, names["symlink"], []byte(names["symlink"])), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, sigPath("symlink")); err != nil && runtime.GOOS != "windows" {
		t.Fatal(err)
	}
	big := append(signFor(t, priv, names["big"], []byte(names["big"])), bytes.Repeat([]byte("#"), release.MaxSignatureSize)...)
	writeOld(t, filepath.Dir(sigPath("big")), filepath.Base(sigPath("big")), big)
	writeOld(t, dir, filepath.Base(sigPath("garbage")), []byte("untrusted comment: x\nnot base64 at all\n"))
	writeOld(t, dir, filepath.Base(sigPath("empty")), nil)
	writeOld(t, dir, filepath.Base(sigPath("good")), signFor(t, priv, names["good"], []byte(names["good"])))
	writeOld(t, dir, filepath.Base(sigPath("orphaned")), signFor(t, priv, names["orphaned"], []byte("x")))

	o := testOptions(dir, "")
	o.NoWatch = true
	var rec recorder
	o.OnEvent = rec.add
	done := make(chan *Catalog)
	go func() {
		c, err := Open(t.Context(), o)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	var c *Catalog
	select {
	case c = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Open blocked (on the FIFO signature?)")
	}
	if c == nil {
		return
	}
	defer c.Close()
	for kind, want := range map[string]string{
		"fifo": "not a regular file", "symlink": "outside", "big": "more than", "garbage": "not a minisign signature", "empty": "empty",
	} {
		if runtime.GOOS == "windows" && (kind == "fifo" || kind == "symlink") {
			continue
		}
		name := names[kind]
		if _, ok := c.Signature(name); ok {
			t.Errorf("%s: signature attached", kind)
		}
		if b, ok := c.ByFilename(name); !ok || b.Signature != "" {
			t.Errorf("%s: binary %+v, %v; want it published, unsigned", kind, b, ok)
		}
		if reason, ok := rec.skipped(name + release.SignatureSuffix); !ok || !strings.Contains(reason, want) {
			t.Errorf("%s: skip reason %q (%v), want it to say %q", kind, reason, ok, want)
		}
	}
	if s, ok := c.Signature(names["good"]); !ok || s.KeyID != release.KeyID(priv.ID()) {
		t.Errorf("good signature: %+v, %v", s, ok)
	}
	if _, ok := c.Signature(names["orphaned"]); ok {
		t.Error("a signature without its binary is served")
	}
}
