package release

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/artifact"
	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/smallfile"
)

// Key files written by WriteKeyPair (sutra release keygen).
const (
	PrivateKeyFile = "sutra-release.key" // minisign secret key, 0600
	PublicKeyFile  = "sutra-release.pub" // minisign public key, 0644
)

// maxKeyFile bounds a key file read from disk (a real one is about 230 bytes).
const maxKeyFile = 4 << 10

// ErrKeyExists is returned by WriteKeyPair when a key file is already there.
var ErrKeyExists = errors.New("release key file already exists")

// WriteKeyPair generates a minisign key pair (crypto/rand) and writes
// dir/sutra-release.key (0600; encrypted with password unless it is empty)
// and dir/sutra-release.pub (0644), each crash-safe. It never overwrites an
// existing key file.
func WriteKeyPair(dir, password string) (pub minisign.PublicKey, keyPath, pubPath string, err error) {
	keyPath, pubPath = filepath.Join(dir, PrivateKeyFile), filepath.Join(dir, PublicKeyFile)
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return pub, "", "", fmt.Errorf("%w: %s (move it away to make a new key; a key in use must not be lost)", ErrKeyExists, p)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pub, "", "", fmt.Errorf("create key dir: %w", err)
	}
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return pub, "", "", fmt.Errorf("generate release key: %w", err)
	}
	var keyText []byte
	if password == "" {
		keyText, err = priv.MarshalText()
	} else {
		keyText, err = minisign.EncryptKey(password, priv)
	}
	if err != nil {
		return pub, "", "", fmt.Errorf("encode release key: %w", err)
	}
	pubText, _ := pub.MarshalText()
	if err := writeNew(keyPath, append(keyText, '\n'), 0o600); err != nil {
		return pub, "", "", err
	}
	if err := writeNew(pubPath, append(pubText, '\n'), 0o644); err != nil {
		_ = os.Remove(keyPath) // no key without its public half
		return pub, "", "", err
	}
	return pub, keyPath, pubPath, nil
}

// writeNew writes path crash-safe (temp + fsync + link + fsync dir) and fails
// if path exists: the final step is a hard link, which never replaces.
func writeNew(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	if err := tmp.Chmod(perm); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrKeyExists, path)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.SyncDir(dir)
}

// readSmall reads a key file: a regular file of at most maxKeyFile bytes
// (a FIFO or device is refused without blocking).
func readSmall(path string) ([]byte, error) {
	data, err := smallfile.Read(path, maxKeyFile)
	if errors.Is(err, smallfile.ErrTooLarge) {
		return nil, fmt.Errorf("%w: not a minisign key", err)
	}
	return data, err
}

// KeyIsEncrypted reports whether the private key file at path is
// password-protected (so the caller knows whether to ask for a password).
func KeyIsEncrypted(path string) (bool, error) {
	data, err := readSmall(path)
	if err != nil {
		return false, fmt.Errorf("read release key: %w", err)
	}
	return minisign.IsEncrypted(bytes.TrimSpace(data)), nil
}

// LoadPrivateKey reads a minisign private key file; password is called only
// when the key is encrypted.
func LoadPrivateKey(path string, password func() (string, error)) (minisign.PrivateKey, error) {
	data, err := readSmall(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("read release key: %w", err)
	}
	data = bytes.TrimSpace(data)
	var key minisign.PrivateKey
	if !minisign.IsEncrypted(data) {
		if err := key.UnmarshalText(data); err != nil {
			return minisign.PrivateKey{}, fmt.Errorf("release key %s: %w", path, err)
		}
		return key, nil
	}
	if password == nil {
		return minisign.PrivateKey{}, fmt.Errorf("release key %s is password-protected and no password was given", path)
	}
	pw, err := password()
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("release key %s: password: %w", path, err)
	}
	key, err = minisign.DecryptKey(pw, data)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("release key %s: wrong password or damaged key: %w", path, err)
	}
	return key, nil
}

// PublicKeyLine returns the base64 line of a public key ("RW…"), the form
// agent configs take.
func PublicKeyLine(pk minisign.PublicKey) string { return pk.String() }

// ReadPublicKeyFile reads a minisign .pub file (or a file holding just the
// "RW…" line) and returns it as a one-key Keyring and the key line.
func ReadPublicKeyFile(path string) (Keyring, string, error) {
	data, err := readSmall(path)
	if err != nil {
		return Keyring{}, "", fmt.Errorf("read release public key: %w", err)
	}
	k, err := ParseKeys([]string{string(data)})
	if err != nil {
		return Keyring{}, "", fmt.Errorf("release public key %s: %w", path, err)
	}
	return k, k.keys[0].String(), nil
}

// IdentityOfFile derives the identity a signature of the file at path must
// bind from its name, {artifact}-{version}-{platform}-{arch}[.exe]
// (internal/artifact). SHA256 and Size are left for Sign to compute.
func IdentityOfFile(path string) (Identity, error) {
	n, err := artifact.ParseFilename(filepath.Base(path))
	if err != nil {
		return Identity{}, fmt.Errorf("%s: the name says what the signature binds: %w", path, err)
	}
	return Identity{Artifact: n.Artifact, Version: n.Version, Platform: n.Platform, Arch: n.Arch}, nil
}

// SignFile signs the binary at path and writes path.minisig beside it
// (crash-safe, 0644, replacing an older signature). The identity comes from
// the file name (IdentityOfFile) and the bytes read.
func SignFile(key minisign.PrivateKey, path string) (sigPath string, id Identity, err error) {
	return SignFileAs(key, path, filepath.Base(path), path+SignatureSuffix)
}

// SignFileAs signs the file at path as the binary named name (for a build
// output whose file is not yet named {artifact}-{version}-{platform}-{arch},
// e.g. goreleaser's dist/sutra-agent_linux_amd64_v1/sutra-agent) and writes
// the signature to sigPath (crash-safe, 0644).
func SignFileAs(key minisign.PrivateKey, path, name, sigPath string) (string, Identity, error) {
	id, err := IdentityOfFile(name)
	if err != nil {
		return "", Identity{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", Identity{}, fmt.Errorf("sign: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", Identity{}, fmt.Errorf("sign: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", Identity{}, fmt.Errorf("sign %s: not a regular file", path)
	}
	id.Size = fi.Size()
	if id.Size == 0 {
		return "", Identity{}, fmt.Errorf("sign %s: empty file", path)
	}
	sig, id, err := Sign(key, f, id)
	if err != nil {
		return "", Identity{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := atomicfile.Write(sigPath, sig, 0o644); err != nil {
		return "", Identity{}, err
	}
	return sigPath, id, nil
}

// VerifyFile verifies path against path.minisig with k, expecting the
// identity its file name gives.
func VerifyFile(k Keyring, path string) (Identity, error) {
	want, err := IdentityOfFile(path)
	if err != nil {
		return Identity{}, err
	}
	sig, err := readSmall(path + SignatureSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return Identity{}, fail(Unsigned, "no %s beside it", filepath.Base(path)+SignatureSuffix)
	}
	if err != nil {
		return Identity{}, fail(Malformed, "%v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return Identity{}, err
	}
	defer f.Close()
	return k.Verify(f, sig, want)
}
