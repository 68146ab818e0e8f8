package semver

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	valid := []string{"1.0.0", "0.0.1", "1.10.0", "2.1.0-rc.1", "1.0.0-alpha.beta", "1.0.0+build.5", "1.0.0-x-y.7+meta-1", "18446744073709551615.0.0"}
	for _, s := range valid {
		v, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q) = %v, want ok", s, err)
			continue
		}
		if v.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, v.String())
		}
	}
	invalid := []string{"", "v1.0.0", "1.0", "1", "1.0.0.0", "01.0.0", "1.02.0", "1.0.0-", "1.0.0-01", "1.0.0-a..b", "1.0.0+", "1.0.0-a_b", "a.b.c", "1.0.0 ", "18446744073709551616.0.0", "-1.0.0"}
	for _, s := range invalid {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded, want error", s)
		}
	}
}

func TestOrdering(t *testing.T) {
	// Ascending, per semver.org §11 plus numeric (not lexical) components.
	ordered := []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0", "2.0.0-rc.1", "2.0.0", "10.0.0"}
	for i := 0; i+1 < len(ordered); i++ {
		if c := Compare(ordered[i], ordered[i+1]); c != -1 {
			t.Errorf("Compare(%s, %s) = %d, want -1", ordered[i], ordered[i+1], c)
		}
		if c := Compare(ordered[i+1], ordered[i]); c != 1 {
			t.Errorf("Compare(%s, %s) = %d, want 1", ordered[i+1], ordered[i], c)
		}
	}
	shuffled := slices.Clone(ordered)
	slices.Reverse(shuffled)
	slices.SortFunc(shuffled, Compare)
	if !slices.Equal(shuffled, ordered) {
		t.Errorf("sorted = %v, want %v", shuffled, ordered)
	}
	if c := Compare("1.0.0+a", "1.0.0+b"); c != 0 {
		t.Errorf("Compare(1.0.0+a, 1.0.0+b) = %d, want 0 (build metadata ignored)", c)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1.0.0", "2.1.0-rc.1", "v1.0.0", "1.0.0+b", "01.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		if v.String() != s {
			t.Fatalf("round trip %q -> %q", s, v.String())
		}
		if v.Compare(v) != 0 {
			t.Fatalf("%q does not equal itself", s)
		}
	})
}

// Issue 9 item 13: numeric pre-release identifiers beyond 64 bits compare
// numerically, not as text.
func TestLongNumericPrerelease(t *testing.T) {
	ordered := []string{
		"1.0.0-9",
		"1.0.0-18446744073709551615",
		"1.0.0-18446744073709551616",
		"1.0.0-99999999999999999999",
		"1.0.0-100000000000000000000",
		"1.0.0-100000000000000000000.1",
		"1.0.0-100000000000000000001",
		"1.0.0-0a",
		"1.0.0-a",
		"1.0.0",
	}
	for i := range ordered {
		for j := range ordered {
			want := cmpInt(i, j)
			if c := Compare(ordered[i], ordered[j]); c != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", ordered[i], ordered[j], c, want)
			}
		}
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FuzzCompare checks that Compare is a total order consistent with the spec:
// antisymmetric, reflexive on equal precedence, build metadata ignored, and
// transitive over three versions.
func FuzzCompare(f *testing.F) {
	seeds := [][3]string{
		{"1.0.0-99999999999999999999", "1.0.0-100000000000000000000", "1.0.0"},
		{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta"},
		{"1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1"},
		{"1.0.0+a", "1.0.0+b", "1.0.0-0"},
		{"1.0.0-1", "1.0.0-a", "1.0.0-1a"},
		{"v1.0.0", "", "18446744073709551616.0.0"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		ab, ba := Compare(a, b), Compare(b, a)
		if ab != -ba {
			t.Fatalf("Compare(%q, %q) = %d but Compare(%q, %q) = %d", a, b, ab, b, a, ba)
		}
		if Compare(a, a) != 0 {
			t.Fatalf("Compare(%q, %q) != 0", a, a)
		}
		bc, ac := Compare(b, c), Compare(a, c)
		if ab <= 0 && bc <= 0 && ac > 0 {
			t.Fatalf("not transitive: %q <= %q <= %q but Compare(%q, %q) = %d", a, b, c, a, c, ac)
		}
		if ab >= 0 && bc >= 0 && ac < 0 {
			t.Fatalf("not transitive: %q >= %q >= %q but Compare(%q, %q) = %d", a, b, c, a, c, ac)
		}
		va, err := Parse(a)
		if err != nil {
			return
		}
		if i := strings.IndexByte(a, '+'); i >= 0 {
			if Compare(a, a[:i]) != 0 {
				t.Fatalf("build metadata changes precedence: Compare(%q, %q) != 0", a, a[:i])
			}
		}
		if va.IsPrerelease() {
			core := fmt.Sprintf("%d.%d.%d", va.Major, va.Minor, va.Patch)
			if Compare(a, core) != -1 {
				t.Fatalf("pre-release %q does not order before %q", a, core)
			}
		}
	})
}
