package release

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// keygen writes a 0600 private key and a .pub that ParseKeys reads, refuses
// to overwrite, and both the unencrypted and the password-protected forms
// load back to a key that signs what the public key verifies.
func TestWriteKeyPairLoadsBack(t *testing.T) {
	for _, pw := range []string{"", "correct horse battery staple"} {
		t.Run("password="+boolName(pw != ""), func(t *testing.T) {
			if pw != "" && (raceOn || testing.Short()) {
				t.Skip("an encrypted minisign key costs two 1 GiB scrypt runs: run without -race and -short")
			}
			dir := filepath.Join(t.TempDir(), "keys")
			pub, keyPath, pubPath, err := WriteKeyPair(dir, pw)
			if err != nil {
				t.Fatal(err)
			}
			if runtime.GOOS != "windows" {
				fi, err := os.Stat(keyPath)
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
				}
			}
			enc, err := KeyIsEncrypted(keyPath)
			if err != nil || enc != (pw != "") {
				t.Fatalf("KeyIsEncrypted = %v, %v; want %v", enc, err, pw != "")
			}
			k, line, err := ReadPublicKeyFile(pubPath)
			if err != nil || line != PublicKeyLine(pub) || !strings.HasPrefix(line, "RW") {
				t.Fatalf("ReadPublicKeyFile = %q, %v; want %q", line, err, PublicKeyLine(pub))
			}
			priv, err := LoadPrivateKey(keyPath, func() (string, error) {
				if pw == "" {
					t.Error("asked for a password for an unencrypted key")
				}
				return pw, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(t.TempDir(), "storage-server-1.2.0-linux-x86_64")
			if err := os.WriteFile(bin, []byte("binary bytes"), 0o755); err != nil {
				t.Fatal(err)
			}
			sigPath, id, err := SignFile(priv, bin)
			if err != nil || sigPath != bin+SignatureSuffix {
				t.Fatalf("SignFile = %q, %v", sigPath, err)
			}
			got, err := VerifyFile(k, bin)
			if err != nil || got != id || got.Artifact != "storage-server" || got.Version != "1.2.0" || got.Platform != "linux" || got.Arch != "x86_64" || got.Size != 12 {
				t.Fatalf("VerifyFile = %+v, %v; want %+v", got, err, id)
			}

			// Never overwrite a key.
			before, _ := os.ReadFile(keyPath)
			if _, _, _, err := WriteKeyPair(dir, ""); !errors.Is(err, ErrKeyExists) {
				t.Fatalf("second WriteKeyPair = %v, want ErrKeyExists", err)
			}
			if after, _ := os.ReadFile(keyPath); string(after) != string(before) {
				t.Fatal("the existing key was changed")
			}
		})
	}
}

func boolName(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// A file whose name is not {artifact}-{version}-{platform}-{arch}[.exe]
// cannot be signed (the name is what the signature binds), and VerifyFile
// says why a file is refused.
func TestSignFileNames(t *testing.T) {
	k, priv, _ := newKey(t)
	dir := t.TempDir()
	for _, name := range []string{"sutra", "storage-server-1.2-linux-x86_64", "storage-server-1.2.0-linux-x86_64.exe", "storage-server-1.2.0-plan9-x86_64"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, _, err := SignFile(priv, p)
		if err == nil || !strings.Contains(err.Error(), "{artifact}-{version}-{platform}-{arch}[.exe]") {
			t.Errorf("SignFile(%s) = %v, want an error naming the expected form", name, err)
		}
		if _, err := os.Stat(p + SignatureSuffix); err == nil {
			t.Errorf("%s: a signature was written", name)
		}
	}

	a := filepath.Join(dir, "storage-server-1.2.0-linux-x86_64")
	b := filepath.Join(dir, "storage-server-1.3.0-linux-x86_64")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte("same bytes"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := VerifyFile(k, a); ReasonOf(err) != Unsigned {
		t.Fatalf("unsigned file: %v, want %s", err, Unsigned)
	}
	if _, _, err := SignFile(priv, a); err != nil {
		t.Fatal(err)
	}
	// The signature of 1.2.0 copied beside 1.3.0 (same bytes) vouches for 1.2.0 only.
	sig, _ := os.ReadFile(a + SignatureSuffix)
	if err := os.WriteFile(b+SignatureSuffix, sig, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyFile(k, b); ReasonOf(err) != Mismatch {
		t.Fatalf("copied signature: %v, want %s", err, Mismatch)
	}
}
