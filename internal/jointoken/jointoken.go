// Package jointoken is the join token a new agent needs to enroll with a
// master: one string that carries both what the agent must trust and what it
// must prove.
//
//	SUTRA1.<CA fingerprint>.<id>.<secret>
//
// The CA fingerprint is the lowercase hex SHA-256 of the DER of the master's
// CA certificate (64 characters). The agent fetches the CA bundle over an
// unauthenticated connection and compares it with this pin before it sends
// anything secret: a different master or a man in the middle fails the
// comparison and learns nothing of the secret (k3s's K10<CA hash> tokens work
// the same way). The id (8 to 16 of [a-z0-9]) names the token on the master,
// in logs and in `sutra tokens`; it is not secret. The secret is 32 random
// bytes from crypto/rand, written in lowercase unpadded base32 (52
// characters of [a-z2-7]); it is the only part that authorizes anything.
//
// The master stores only Hash(secret), SHA-256 of the secret. A plain fast
// hash is enough here, unlike for passwords: the secret has 256 bits of
// entropy from crypto/rand, so a stolen hash cannot be reversed by guessing
// (there is no dictionary to try and 2^256 candidates), and a slow or salted
// hash would add nothing but cost on every enrollment. VerifySecret compares
// the hashes in constant time.
//
// Parse is strict (exact version prefix, exact lengths, lowercase only, no
// whitespace, canonical base32) so that one token has exactly one spelling,
// and its errors say what is wrong without ever echoing the secret. A Token
// logs itself redacted through slog (LogValue); String is the full token, to
// be shown once to the operator who created it.
package jointoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Prefix is the version field every token starts with.
const Prefix = "SUTRA1"

// Lengths of the fields, in characters.
const (
	FingerprintLen = 2 * sha256.Size
	MinIDLen       = 8
	MaxIDLen       = 16
	// GeneratedIDLen is the length of ids Generate makes.
	GeneratedIDLen = 12
	// SecretSize is the secret's size in bytes; SecretLen its length as text.
	SecretSize = 32
	SecretLen  = (SecretSize*8 + 4) / 5
	// MaxLen is the longest well-formed token; Parse refuses longer input
	// before looking at it.
	MaxLen = len(Prefix) + 1 + FingerprintLen + 1 + MaxIDLen + 1 + SecretLen
)

// ErrMalformed is wrapped by every error of Parse and of the validators.
var ErrMalformed = errors.New("malformed join token")

const idChars = "abcdefghijklmnopqrstuvwxyz0123456789"

// encoding is lowercase RFC 4648 base32 without padding. It ignores
// non-zero trailing bits, so ParseSecret re-encodes to refuse them: every
// secret has one spelling.
var encoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Token is a parsed or generated join token. The zero Token is invalid.
type Token struct {
	// Fingerprint is the CA pin: lowercase hex SHA-256 of the CA
	// certificate's DER.
	Fingerprint string
	// ID names the token; it is not secret.
	ID     string
	secret [SecretSize]byte
}

// Generate makes a new token pinned to the CA with the given fingerprint,
// with a random id and secret from crypto/rand.
func Generate(fingerprint string) (Token, error) {
	if err := ValidateFingerprint(fingerprint); err != nil {
		return Token{}, err
	}
	t := Token{Fingerprint: fingerprint, ID: randomID(GeneratedIDLen)}
	_, _ = rand.Read(t.secret[:]) // never fails (crypto/rand crashes the program instead)
	return t, nil
}

// randomID returns n characters drawn uniformly from idChars.
func randomID(n int) string {
	out := make([]byte, 0, n)
	var buf [32]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:])
		for _, b := range buf {
			// 252 = 7*36: rejecting larger bytes keeps the draw uniform.
			if b < 252 && len(out) < n {
				out = append(out, idChars[b%36])
			}
		}
	}
	return string(out)
}

// Parse reads a token. It accepts exactly what String produces.
func Parse(s string) (Token, error) {
	if len(s) > MaxLen {
		return Token{}, fmt.Errorf("%w: %d bytes long, a join token has at most %d", ErrMalformed, len(s), MaxLen)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r > 0x7e }) {
		return Token{}, fmt.Errorf("%w: it contains whitespace, control or non-ASCII characters (copy the token exactly as `sutra tokens create` printed it, without quotes or newlines)", ErrMalformed)
	}
	fields := strings.Split(s, ".")
	if len(fields) != 4 {
		return Token{}, fmt.Errorf("%w: it has %d dot-separated fields, want 4 (%s.<CA fingerprint>.<id>.<secret>)", ErrMalformed, len(fields), Prefix)
	}
	if fields[0] != Prefix {
		// Not even the version field is quoted: in a mangled token it may
		// be part of a secret.
		return Token{}, fmt.Errorf("%w: it does not start with %s. (a token from another product, or from a newer sutra?)", ErrMalformed, Prefix)
	}
	var t Token
	if err := ValidateFingerprint(fields[1]); err != nil {
		return Token{}, err
	}
	t.Fingerprint = fields[1]
	if err := ValidateID(fields[2]); err != nil {
		return Token{}, err
	}
	t.ID = fields[2]
	sec, err := ParseSecret(fields[3])
	if err != nil {
		return Token{}, err
	}
	t.secret = sec
	return t, nil
}

// ValidateFingerprint checks a CA pin: 64 lowercase hex characters.
func ValidateFingerprint(fp string) error {
	if len(fp) != FingerprintLen {
		return fmt.Errorf("%w: the CA fingerprint is %d characters long, want %d (lowercase hex SHA-256)", ErrMalformed, len(fp), FingerprintLen)
	}
	for i := 0; i < len(fp); i++ {
		c := fp[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: the CA fingerprint has %q at position %d: use lowercase hex (0-9 a-f)", ErrMalformed, c, i)
		}
	}
	return nil
}

// ValidateID checks a token id: MinIDLen to MaxIDLen of [a-z0-9].
func ValidateID(id string) error {
	if len(id) < MinIDLen || len(id) > MaxIDLen {
		return fmt.Errorf("%w: the token id is %d characters long, want %d to %d", ErrMalformed, len(id), MinIDLen, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if strings.IndexByte(idChars, id[i]) < 0 {
			return fmt.Errorf("%w: the token id has %q at position %d: use only a-z 0-9", ErrMalformed, id[i], i)
		}
	}
	return nil
}

// ParseSecret decodes the secret field. Its errors never quote the input.
func ParseSecret(s string) ([SecretSize]byte, error) {
	var sec [SecretSize]byte
	if len(s) != SecretLen {
		return sec, fmt.Errorf("%w: the secret is %d characters long, want %d", ErrMalformed, len(s), SecretLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return sec, fmt.Errorf("%w: the secret has a character outside a-z 2-7 at position %d", ErrMalformed, i)
		}
	}
	n, err := encoding.Decode(sec[:], []byte(s))
	if err != nil || n != SecretSize || encoding.EncodeToString(sec[:]) != s {
		// err quotes nothing of the input but its offset; don't wrap it anyway.
		return [SecretSize]byte{}, fmt.Errorf("%w: the secret is not canonical base32 (its last character is wrong)", ErrMalformed)
	}
	return sec, nil
}

// Secret returns a copy of the secret bytes.
func (t Token) Secret() []byte { return append([]byte(nil), t.secret[:]...) }

// Hash is what the master stores instead of the secret: SHA-256 of it.
func (t Token) Hash() []byte { return Hash(t.secret[:]) }

// String is the whole token, secret included: show it once to whoever
// created it, never log it (loggers get Redacted through LogValue).
func (t Token) String() string {
	return Prefix + "." + t.Fingerprint + "." + t.ID + "." + encoding.EncodeToString(t.secret[:])
}

// Redacted is the token without its secret, for logs and messages.
func (t Token) Redacted() string {
	return Prefix + "." + t.Fingerprint + "." + t.ID + ".<redacted>"
}

// LogValue makes slog log the redacted form.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.Redacted()) }

// GoString keeps %#v from printing the secret.
func (t Token) GoString() string { return "jointoken.Token(" + t.Redacted() + ")" }

// Format keeps every fmt verb but %s and %v from printing the secret, and
// makes %v the redacted form too; only %s (and String) print the whole token.
func (t Token) Format(f fmt.State, verb rune) {
	switch verb {
	case 's':
		_, _ = f.Write([]byte(t.String()))
	default:
		_, _ = f.Write([]byte(t.Redacted()))
	}
}

// Hash returns SHA-256 of secret, the form the master stores (see the
// package doc for why a fast hash is right for a 256-bit random secret).
func Hash(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

// VerifySecret reports whether secret hashes to storedHash, comparing in
// constant time (the time does not depend on where the hashes differ).
func VerifySecret(storedHash, secret []byte) bool {
	return subtle.ConstantTimeCompare(Hash(secret), storedHash) == 1
}
