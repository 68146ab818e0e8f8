package release

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"aead.dev/minisign"
)

// FuzzKeyFiles: whatever a key file holds, LoadPrivateKey and
// ReadPublicKeyFile return a key or an error, never panic; a key file larger
// than maxKeyFile is refused unread.
func FuzzKeyFiles(f *testing.F) {
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	privText, _ := priv.MarshalText()
	pubText, _ := pub.MarshalText()
	f.Add(privText)
	f.Add(pubText)
	f.Add([]byte(pub.String()))
	f.Add([]byte("untrusted comment: x\n"))
	f.Add([]byte("untrusted comment: minisign encrypted secret key\nRWRTY0Iy" + strings.Repeat("A", 200)))
	f.Add([]byte(strings.Repeat("RW", maxKeyFile)))
	f.Add([]byte{0, 0xff, '\n', '\r'})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "k")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		noPassword := func() (string, error) { return "", errors.New("no password in the fuzzer") }
		if _, err := LoadPrivateKey(p, noPassword); err == nil && len(data) > maxKeyFile {
			t.Fatalf("a %d-byte key file loaded", len(data))
		}
		if k, line, err := ReadPublicKeyFile(p); err == nil && (k.Len() != 1 || !strings.HasPrefix(line, "RW")) {
			t.Fatalf("public key %q: %d keys", line, k.Len())
		}
	})
}
