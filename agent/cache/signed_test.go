package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/release"
)

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// FuzzCachedSignature: whatever bytes sit in the cache's .minisig, a
// signed cache never returns the entry unless it is the real signature.
func FuzzCachedSignature(f *testing.F) {
	k := struct {
		pub  minisign.PublicKey
		priv minisign.PrivateKey
	}{}
	var err error
	if k.pub, k.priv, err = minisign.GenerateKey(rand.Reader); err != nil {
		f.Fatal(err)
	}
	data := bytes.Repeat([]byte("sutra"), 800)
	good, _, _ := release.Sign(k.priv, bytes.NewReader(data), release.Identity{Artifact: "storage-server", Version: "1.0.0", Platform: "linux", Arch: "x86_64"})
	f.Add(good)
	f.Add([]byte{})
	f.Add(bytes.Replace(good, []byte("1.0.0"), []byte("1.0.1"), 1))
	f.Add([]byte("untrusted comment: \n" + strings.Repeat("RW", 100)))
	f.Add(bytes.Repeat([]byte{0xff}, release.MaxSignatureSize+10))
	pubText, _ := k.pub.MarshalText()
	kr, _ := release.ParseKeys([]string{string(pubText)})
	f.Fuzz(func(t *testing.T, sig []byte) {
		dir := t.TempDir()
		c, err := New(Options{Dir: dir, Artifact: "storage-server", Platform: "linux", Keys: kr})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Prepare("1.0.0"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.PartialPath("1.0.0"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		id := release.Identity{Artifact: "storage-server", Version: "1.0.0", Platform: "linux", Arch: "x86_64", SHA256: sha256hex(data), Size: int64(len(data))}
		_, verr := c.VerifyPartial(context.Background(), id, sig)
		if verr == nil && !bytes.Equal(sig, good) {
			// Another encoding of the same signature is acceptable only if it verifies.
			t.Logf("accepted a different but valid encoding")
		}
		if len(sig) > release.MaxSignatureSize {
			return
		}
		if _, err := c.CommitSigned(Entry{Version: "1.0.0", Platform: "linux", Arch: "x86_64", Checksum: id.SHA256, Size: id.Size}, sig); err != nil {
			t.Fatal(err)
		}
		_, err = c.Verified(context.Background(), "1.0.0")
		if (err == nil) != (verr == nil) {
			t.Fatalf("VerifyPartial = %v but Verified = %v", verr, err)
		}
	})
}
