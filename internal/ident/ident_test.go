package ident

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	good := []string{"a", "node-1", "A.b_c-9", "n0de.v2", "host.example.com", "9", strings.Repeat("x", MaxLen), "console", "com10", "lpt", "nul1"}
	for _, id := range good {
		if err := Validate("node", id); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", id, err)
		}
	}
	bad := []string{
		"", ".", "..", "...", "-rf", "--help", ".hidden", "_x", "x.", "x-", "x_",
		"a/b", `a\b`, "../etc", "a b", "a\x00b", "a\nb", "a\tb", "\x1b[31m", "é", "a:b", "a*b", "a%2f",
		"CON", "con", "nul", "Nul.txt", "com1", "LPT9.log", "aux",
		strings.Repeat("x", MaxLen+1),
	}
	for _, id := range bad {
		err := Validate("node", id)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%q) = %v, want ErrInvalid", id, err)
			continue
		}
		if !strings.Contains(err.Error(), "node id") {
			t.Errorf("Validate(%q) = %q, want it to name the node id", id, err)
		}
	}
}

// FuzzValidate: whatever passes is a safe single path component and
// command-line value on every platform.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"node-1", ".", "..", "-rf", "a/b", "CON", "x.", "a\x00", strings.Repeat("a", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if Validate("node", id) != nil {
			return
		}
		if filepath.Base(id) != id || id == "." || id == ".." || strings.HasPrefix(id, "-") || strings.HasSuffix(id, ".") ||
			strings.ContainsAny(id, `/\:*?"<>| `) || len(id) > MaxLen || filepath.IsAbs(id) {
			t.Fatalf("Validate accepted unsafe id %q", id)
		}
	})
}
