// Package semver parses and orders strict semantic versions (semver.org 2.0.0)
// without a leading "v": MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD].
//
// It is strict on purpose: binary file names and agent requests are matched
// against it, and a lenient parser would let "v1.0.0" or "1.0" through.
package semver

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Version is a parsed semantic version.
type Version struct {
	Major, Minor, Patch uint64
	// Prerelease holds the dot-separated identifiers after '-', empty for a stable release.
	Prerelease []string
	// Build is the metadata after '+'; it does not take part in ordering.
	Build string
	raw   string
}

// ErrInvalid is wrapped by every Parse error.
var ErrInvalid = errors.New("invalid semantic version")

// Parse parses s as a strict semantic version.
func Parse(s string) (Version, error) {
	v := Version{raw: s}
	if s == "" {
		return v, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if s[0] == 'v' || s[0] == 'V' {
		return v, fmt.Errorf("%w %q: no leading 'v' allowed (use %q)", ErrInvalid, s, s[1:])
	}
	rest := s
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		v.Build = rest[i+1:]
		rest = rest[:i]
		if err := checkIdentifiers(v.Build, false); err != nil {
			return v, fmt.Errorf("%w %q: build metadata: %v", ErrInvalid, s, err)
		}
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		pre := rest[i+1:]
		rest = rest[:i]
		if err := checkIdentifiers(pre, true); err != nil {
			return v, fmt.Errorf("%w %q: pre-release: %v", ErrInvalid, s, err)
		}
		v.Prerelease = strings.Split(pre, ".")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%w %q: want MAJOR.MINOR.PATCH", ErrInvalid, s)
	}
	nums := [3]*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		n, err := parseNumeric(p)
		if err != nil {
			return v, fmt.Errorf("%w %q: %v", ErrInvalid, s, err)
		}
		*nums[i] = n
	}
	return v, nil
}

// MustParse is Parse for constants in tests and tables; it panics on error.
func MustParse(s string) Version {
	v, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String returns the version as it was parsed.
func (v Version) String() string { return v.raw }

// IsPrerelease reports whether v has pre-release identifiers.
func (v Version) IsPrerelease() bool { return len(v.Prerelease) > 0 }

// Compare returns -1, 0 or +1 as v orders before, equal to, or after w
// under semver precedence (build metadata ignored).
func (v Version) Compare(w Version) int {
	for _, c := range [3][2]uint64{{v.Major, w.Major}, {v.Minor, w.Minor}, {v.Patch, w.Patch}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(v.Prerelease) == 0 && len(w.Prerelease) == 0:
		return 0
	case len(v.Prerelease) == 0:
		return 1
	case len(w.Prerelease) == 0:
		return -1
	}
	for i := 0; i < len(v.Prerelease) && i < len(w.Prerelease); i++ {
		if c := compareIdentifier(v.Prerelease[i], w.Prerelease[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(v.Prerelease) < len(w.Prerelease):
		return -1
	case len(v.Prerelease) > len(w.Prerelease):
		return 1
	}
	return 0
}

// Compare parses and compares two version strings; unparsable strings order
// before every valid version and among themselves lexically, so sorting never panics.
func Compare(a, b string) int {
	va, errA := Parse(a)
	vb, errB := Parse(b)
	switch {
	case errA != nil && errB != nil:
		return strings.Compare(a, b)
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	return va.Compare(vb)
}

// compareIdentifier orders two pre-release identifiers (semver.org §11.4):
// numeric identifiers compare numerically at any length (they have no leading
// zeros, so the longer one is larger), numeric ones order before alphanumeric
// ones, and alphanumeric ones compare in ASCII order.
func compareIdentifier(a, b string) int {
	aNum, bNum := isDigits(a), isDigits(b)
	switch {
	case aNum && bNum:
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if c := cmp.Compare(len(a), len(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	case aNum:
		return -1
	case bNum:
		return 1
	}
	return strings.Compare(a, b)
}

func parseNumeric(p string) (uint64, error) {
	if p == "" {
		return 0, errors.New("empty numeric component")
	}
	if !isDigits(p) {
		return 0, fmt.Errorf("%q is not a number", p)
	}
	if len(p) > 1 && p[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", p)
	}
	n, err := strconv.ParseUint(p, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", p)
	}
	return n, nil
}

func checkIdentifiers(s string, noLeadingZero bool) error {
	if s == "" {
		return errors.New("empty")
	}
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return errors.New("empty identifier")
		}
		for _, r := range id {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("identifier %q has character %q (allowed: 0-9 A-Z a-z -)", id, r)
			}
		}
		if noLeadingZero && isDigits(id) && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("numeric identifier %q has a leading zero", id)
		}
	}
	return nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
