package semver

import (
	"slices"
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
