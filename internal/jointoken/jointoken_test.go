package jointoken

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

var fp = strings.Repeat("0123456789abcdef", 4)

func TestGenerateParseRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := Generate(fp)
		if err != nil {
			t.Fatal(err)
		}
		s := tok.String()
		if !strings.HasPrefix(s, Prefix+"."+fp+".") || len(tok.ID) != GeneratedIDLen {
			t.Fatalf("Generate = %q, want %s.%s.<12-char id>.<secret>", tok.Redacted(), Prefix, fp)
		}
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(Generate().String()) = %v", err)
		}
		if got.String() != s || got.ID != tok.ID || got.Fingerprint != fp || !bytes.Equal(got.Secret(), tok.Secret()) {
			t.Fatalf("Parse(%s) = %s, want the same token", tok.Redacted(), got.Redacted())
		}
		if seen[tok.ID] || seen[string(tok.Secret())] {
			t.Fatal("Generate repeated an id or a secret")
		}
		seen[tok.ID], seen[string(tok.Secret())] = true, true
		if len(s) > MaxLen {
			t.Fatalf("len(token) = %d > MaxLen %d", len(s), MaxLen)
		}
	}
}

func TestGenerateRefusesBadFingerprint(t *testing.T) {
	for _, bad := range []string{"", "abc", strings.ToUpper(fp), fp + "0", fp[:63] + "g"} {
		if _, err := Generate(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Generate(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := Generate(fp)
	s := good.String()
	parts := strings.Split(s, ".")
	sec := parts[3]
	join := func(p ...string) string { return strings.Join(p, ".") }
	cases := map[string]string{
		"empty":             "",
		"only prefix":       Prefix,
		"three fields":      join(Prefix, fp, good.ID),
		"five fields":       s + ".x",
		"trailing dot":      s + ".",
		"double dot":        join(Prefix, fp, good.ID, "", sec),
		"wrong version":     join("SUTRA2", fp, good.ID, sec),
		"lower version":     join("sutra1", fp, good.ID, sec),
		"k3s token":         "K10" + fp + "::server:" + sec,
		"upper hex":         join(Prefix, strings.ToUpper(fp), good.ID, sec),
		"short fingerprint": join(Prefix, fp[:63], good.ID, sec),
		"long fingerprint":  join(Prefix, fp+"a", good.ID, sec),
		"short id":          join(Prefix, fp, "abc1234", sec),
		"long id":           join(Prefix, fp, "abcdefghij0123456", sec),
		"upper id":          join(Prefix, fp, "ABCDEFGH12", sec),
		"id with dash":      join(Prefix, fp, "abcd-efgh", sec),
		"short secret":      join(Prefix, fp, good.ID, sec[:51]),
		"long secret":       join(Prefix, fp, good.ID, sec+"a"),
		"upper secret":      join(Prefix, fp, good.ID, strings.ToUpper(sec)),
		"secret with 1":     join(Prefix, fp, good.ID, sec[:10]+"1"+sec[11:]),
		"secret padded":     join(Prefix, fp, good.ID, sec[:48]+"===="),
		"non-canonical":     join(Prefix, fp, good.ID, sec[:51]+"b"), // 52nd char carries 1 bit + 4 zero bits; "b" sets a trailing bit
		"leading space":     " " + s,
		"trailing newline":  s + "\n",
		"inner tab":         join(Prefix, fp, good.ID+"\t", sec),
		"unicode":           join(Prefix, fp, "ａｂｃｄｅｆｇｈ", sec),
		"NUL":               s[:20] + "\x00" + s[21:],
		"huge":              strings.Repeat("A", 1<<20),
		"huge dots":         strings.Repeat(".", 1000),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%.40q) = %v, want ErrMalformed", in, err)
			}
			if strings.Contains(err.Error(), sec[:8]) {
				t.Fatalf("Parse error %q echoes the secret", err)
			}
		})
	}
}

func TestNonCanonicalSecretCaseIsReallyNonCanonical(t *testing.T) {
	// Guard the "non-canonical" case above: the last character of a
	// canonical secret encodes 1 bit and four zero bits, so it is one of
	// "a" or "q"; "b" must then be refused, not silently accepted.
	for range 20 {
		tok, _ := Generate(fp)
		last := tok.String()[len(tok.String())-1]
		if last != 'a' && last != 'q' {
			t.Fatalf("secret ends in %q, want a or q", last)
		}
	}
}

func TestTokenNeverPrintsSecretExceptString(t *testing.T) {
	tok, _ := Generate(fp)
	secret := strings.Split(tok.String(), ".")[3]
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("enroll", "token", tok)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("enroll", "token", tok)
	outs := []string{logs.String(), tok.Redacted(), fmt.Sprintf("%v", tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), fmt.Sprintf("%q", tok)}
	for _, o := range outs {
		if strings.Contains(o, secret) {
			t.Errorf("output %q contains the secret", o)
		}
		if !strings.Contains(o, tok.ID) {
			t.Errorf("output %q does not name the token id", o)
		}
	}
	if got := fmt.Sprintf("%s", tok); got != tok.String() {
		t.Errorf("%%s = %q, want the full token", got)
	}
}

func TestVerifySecret(t *testing.T) {
	tok, _ := Generate(fp)
	other, _ := Generate(fp)
	stored := tok.Hash()
	if len(stored) != 32 {
		t.Fatalf("Hash is %d bytes, want 32", len(stored))
	}
	if !VerifySecret(stored, tok.Secret()) {
		t.Fatal("VerifySecret(own hash, own secret) = false")
	}
	for name, c := range map[string]struct{ hash, secret []byte }{
		"other secret":  {stored, other.Secret()},
		"empty secret":  {stored, nil},
		"empty hash":    {nil, tok.Secret()},
		"hash as input": {stored, stored},
		"short hash":    {stored[:31], tok.Secret()},
	} {
		if VerifySecret(c.hash, c.secret) {
			t.Errorf("%s: VerifySecret = true", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Generate(fp)
	s := good.String()
	for _, seed := range []string{
		"", s, s + ".", "." + s, s + "\n", " " + s, "\t" + s, strings.ToUpper(s),
		strings.Replace(s, Prefix, "SUTRA0", 1), strings.Replace(s, fp, strings.ToUpper(fp), 1),
		"SUTRA1....", "SUTRA1.", strings.Repeat(".", 200), strings.Repeat("a", MaxLen+1),
		"SUTRA1." + fp + ".ünïcödé1." + strings.Split(s, ".")[3], "SUTRA1\u00a0" + s[6:],
		s[:len(s)-1] + "b", s[:len(s)-1] + "=", "SUTRA1." + fp + ".abcdefgh.",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tok, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			// The error never quotes the secret field.
			if parts := strings.Split(in, "."); len(parts) == 4 && len(parts[3]) >= 6 && strings.Contains(err.Error(), parts[3]) {
				t.Fatalf("Parse error %q echoes the secret field", err)
			}
			return
		}
		// One spelling per token: what parses prints back identically.
		if tok.String() != in {
			t.Fatalf("Parse(%q).String() = %q", in, tok.String())
		}
		if again, err := Parse(tok.String()); err != nil || again.String() != in {
			t.Fatalf("re-Parse = %v, %v", again.Redacted(), err)
		}
	})
}
