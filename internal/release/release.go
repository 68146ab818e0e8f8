// Package release is the one definition of what a release signature says
// and how it is checked: minisign signatures (aead.dev/minisign) whose
// trusted comment binds the artifact, version, platform, arch, SHA-256 and
// size of the one file it signs, so that a valid signature for one file can
// never vouch for another name, version, platform or content.
//
// The trusted comment of a Sutra release signature reads
//
//	sutra-release storage-server 1.2.0 linux x86_64 sha256:<64 hex> size:<bytes>
//
// It is covered by the signature's global signature, so editing it breaks
// verification; and Verify compares every field with what the verifier
// expects and with the bytes it actually read.
//
// The signing key is kept offline: the release side (sutra release keygen,
// sutra release sign, make dist-binaries) holds it; the master only serves
// the FILE.minisig files; agents verify with public keys they were
// configured with.
package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"aead.dev/minisign"
)

// CommentPrefix starts every Sutra release trusted comment.
const CommentPrefix = "sutra-release"

// SignatureSuffix is appended to a binary's file name to name its signature.
const SignatureSuffix = ".minisig"

// MaxSignatureSize bounds a .minisig file (a real one is about 350 bytes;
// the trusted comment is at most a few hundred).
const MaxSignatureSize = 4 << 10

// maxField bounds each field of the trusted comment.
const maxField = 128

// Identity is what a signature vouches for: one file of one release.
type Identity struct {
	Artifact string // e.g. storage-server, sutra-agent
	Version  string // e.g. 1.2.0
	Platform string // linux, darwin, windows
	Arch     string // x86_64, arm64
	SHA256   string // lower-case hex of the file's SHA-256
	Size     int64  // the file's size in bytes
}

// Comment is the trusted comment that binds id.
func (id Identity) Comment() string {
	return fmt.Sprintf("%s %s %s %s %s sha256:%s size:%d",
		CommentPrefix, id.Artifact, id.Version, id.Platform, id.Arch, id.SHA256, id.Size)
}

// String names the file the identity describes (for messages).
func (id Identity) String() string {
	return fmt.Sprintf("%s %s %s/%s", id.Artifact, id.Version, id.Platform, id.Arch)
}

// ParseComment parses a trusted comment made by Identity.Comment. Anything
// else (another prefix, a missing or extra field, a malformed checksum or
// size) is an error.
func ParseComment(s string) (Identity, error) {
	f := strings.Split(s, " ")
	if len(f) != 7 || f[0] != CommentPrefix {
		return Identity{}, fmt.Errorf("trusted comment %q is not a sutra release comment (want %q)", clip(s), CommentPrefix+" ARTIFACT VERSION PLATFORM ARCH sha256:HEX size:N")
	}
	id := Identity{Artifact: f[1], Version: f[2], Platform: f[3], Arch: f[4]}
	for _, v := range []string{id.Artifact, id.Version, id.Platform, id.Arch} {
		if v == "" || len(v) > maxField {
			return Identity{}, fmt.Errorf("trusted comment %q has an empty or overlong field", clip(s))
		}
	}
	sum, ok := strings.CutPrefix(f[5], "sha256:")
	if !ok || len(sum) != sha256.Size*2 || strings.ToLower(sum) != sum {
		return Identity{}, fmt.Errorf("trusted comment %q: checksum is not sha256:<64 lower-case hex>", clip(s))
	}
	if _, err := hex.DecodeString(sum); err != nil {
		return Identity{}, fmt.Errorf("trusted comment %q: checksum is not hex", clip(s))
	}
	id.SHA256 = sum
	size, ok := strings.CutPrefix(f[6], "size:")
	if !ok {
		return Identity{}, fmt.Errorf("trusted comment %q: no size:N", clip(s))
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != size {
		return Identity{}, fmt.Errorf("trusted comment %q: size is not a non-negative decimal", clip(s))
	}
	id.Size = n
	return id, nil
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// Reason says why a verification failed; the agent reports it to the master
// and logs it.
type Reason string

// Reasons a verification fails.
const (
	Unsigned     Reason = "unsigned"      // no signature where one is required
	Malformed    Reason = "malformed"     // the .minisig does not parse
	UnknownKey   Reason = "unknown-key"   // signed by a key not configured
	BadSignature Reason = "bad-signature" // the signature does not match the bytes or comment
	Mismatch     Reason = "mismatch"      // valid signature, but for another file
)

// Error is a failed verification.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string { return "signature " + string(e.Reason) + ": " + e.Detail }

// ReasonOf returns the Reason of a verification error, or "" for any other error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func fail(r Reason, format string, a ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// Keyring is the set of release public keys an agent trusts (several, for
// key rotation).
type Keyring struct {
	keys []minisign.PublicKey
}

// MaxKeys bounds a keyring.
const MaxKeys = 16

// ParseKeys parses public keys, each either the base64 line ("RW…") or the
// content of a minisign .pub file (its untrusted comment line is ignored).
func ParseKeys(texts []string) (Keyring, error) {
	if len(texts) > MaxKeys {
		return Keyring{}, fmt.Errorf("%d release public keys: at most %d", len(texts), MaxKeys)
	}
	var k Keyring
	for i, t := range texts {
		line := strings.TrimSpace(t)
		if strings.HasPrefix(line, "untrusted comment:") {
			if _, rest, ok := strings.Cut(line, "\n"); ok {
				line = strings.TrimSpace(rest)
			}
		}
		var pk minisign.PublicKey
		if err := pk.UnmarshalText([]byte(line)); err != nil {
			return Keyring{}, fmt.Errorf("release public key %d (%q): %w", i+1, clip(line), err)
		}
		if k.find(pk.ID()) != nil {
			continue
		}
		k.keys = append(k.keys, pk)
	}
	return k, nil
}

// Len is the number of keys.
func (k Keyring) Len() int { return len(k.keys) }

// IDs lists the key ids, as minisign prints them (upper-case hex).
func (k Keyring) IDs() []string {
	out := make([]string, len(k.keys))
	for i, pk := range k.keys {
		out[i] = KeyID(pk.ID())
	}
	return out
}

// KeyID formats a minisign key id.
func KeyID(id uint64) string { return strings.ToUpper(strconv.FormatUint(id, 16)) }

func (k Keyring) find(id uint64) *minisign.PublicKey {
	for i := range k.keys {
		if k.keys[i].ID() == id {
			return &k.keys[i]
		}
	}
	return nil
}

// ParseSignature parses the content of a .minisig file.
func ParseSignature(sig []byte) (minisign.Signature, error) {
	if len(sig) == 0 {
		return minisign.Signature{}, fail(Unsigned, "no signature")
	}
	if len(sig) > MaxSignatureSize {
		return minisign.Signature{}, fail(Malformed, "signature is %d bytes, more than %d", len(sig), MaxSignatureSize)
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return minisign.Signature{}, fail(Malformed, "%v", err)
	}
	return s, nil
}

// Verify reads the whole of r and checks that sig is a valid signature of
// those bytes by a key in k, whose trusted comment names exactly want
// (artifact, version, platform, arch; and SHA256/Size when want sets them)
// and the SHA-256 and size of the bytes read. It returns the identity the
// signature vouches for. Every failure is an *Error saying why.
func (k Keyring) Verify(r io.Reader, sig []byte, want Identity) (Identity, error) {
	if k.Len() == 0 {
		return Identity{}, errors.New("no release public keys configured")
	}
	s, err := ParseSignature(sig)
	if err != nil {
		return Identity{}, err
	}
	pk := k.find(s.KeyID)
	if pk == nil {
		return Identity{}, fail(UnknownKey, "signed by key %s, which is not one of the configured release keys (%s)", KeyID(s.KeyID), strings.Join(k.IDs(), ", "))
	}
	h := sha256.New()
	mr := minisign.NewReader(io.TeeReader(r, h))
	n, err := io.Copy(io.Discard, mr)
	if err != nil {
		return Identity{}, fmt.Errorf("read the file to verify: %w", err)
	}
	if !mr.Verify(*pk, sig) {
		return Identity{}, fail(BadSignature, "the signature by key %s does not match the file or its trusted comment (altered file, or an edited comment)", KeyID(s.KeyID))
	}
	got, err := ParseComment(s.TrustedComment)
	if err != nil {
		return Identity{}, fail(Mismatch, "%v", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if got.SHA256 != sum || got.Size != n {
		return Identity{}, fail(Mismatch, "the signature vouches for a file with sha256:%s size:%d, this one is sha256:%s size:%d", got.SHA256, got.Size, sum, n)
	}
	if err := match(got, want); err != nil {
		return Identity{}, err
	}
	return got, nil
}

// match compares the signed identity with the one expected.
func match(got, want Identity) error {
	check := func(field, g, w string) error {
		if w != "" && g != w {
			return fail(Mismatch, "the signature is for %s %s, not %s (signed: %s)", field, g, w, got.Comment())
		}
		return nil
	}
	for _, c := range [][3]string{
		{"artifact", got.Artifact, want.Artifact},
		{"version", got.Version, want.Version},
		{"platform", got.Platform, want.Platform},
		{"arch", got.Arch, want.Arch},
		{"sha256", got.SHA256, want.SHA256},
	} {
		if err := check(c[0], c[1], c[2]); err != nil {
			return err
		}
	}
	if want.Size != 0 && got.Size != want.Size {
		return fail(Mismatch, "the signature is for size %d, not %d", got.Size, want.Size)
	}
	return nil
}

// Sign reads the whole of r and returns a .minisig for it whose trusted
// comment binds id; id.SHA256 and id.Size are computed from the bytes read
// (values set in id must agree with them).
func Sign(key minisign.PrivateKey, r io.Reader, id Identity) ([]byte, Identity, error) {
	for _, v := range []string{id.Artifact, id.Version, id.Platform, id.Arch} {
		if v == "" || len(v) > maxField || strings.ContainsAny(v, " \t\r\n") {
			return nil, Identity{}, fmt.Errorf("sign: artifact, version, platform and arch must be non-empty words (got %q)", id.String())
		}
	}
	h := sha256.New()
	mr := minisign.NewReader(io.TeeReader(r, h))
	n, err := io.Copy(io.Discard, mr)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("sign: read: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if (id.SHA256 != "" && id.SHA256 != sum) || (id.Size != 0 && id.Size != n) {
		return nil, Identity{}, fmt.Errorf("sign: the file changed: expected sha256:%s size:%d, read sha256:%s size:%d", id.SHA256, id.Size, sum, n)
	}
	id.SHA256, id.Size = sum, n
	untrusted := "signature from sutra release key " + KeyID(key.ID())
	return mr.SignWithComments(key, id.Comment(), untrusted), id, nil
}
