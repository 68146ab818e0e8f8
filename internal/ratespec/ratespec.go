// Package ratespec parses and formats transfer rates such as "200MB/s",
// "50MiB/s", "1.5GB/s" or "800KB": the one syntax of the master's
// --max-egress and --max-download-rate and the agent's
// download_rate_limit.
//
// A rate is a positive number, an optional unit (B, KB, MB, GB, TB in
// powers of 1000; KiB, MiB, GiB, TiB in powers of 1024; a bare number is
// bytes) and an optional "/s". "", "0", "unlimited", "none" and "off" mean
// no limit (Parse returns 0). Anything else is an error naming the input.
package ratespec

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Max is the largest rate Parse accepts: 1 PB/s, far above any link, and
// small enough to stay exact in a float64 and an int64.
const Max = 1_000_000_000_000_000

// MaxLen bounds the input Parse reads.
const MaxLen = 64

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("invalid rate")

var units = []struct {
	name string
	mul  float64
}{
	// Longest suffixes first so "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// Parse returns the rate s in bytes per second, 0 for "no limit".
func Parse(s string) (int64, error) {
	if len(s) > MaxLen {
		return 0, fmt.Errorf("%w: %d characters (at most %d)", ErrInvalid, len(s), MaxLen)
	}
	t := strings.ToLower(strings.TrimSpace(s))
	switch t {
	case "", "0", "unlimited", "none", "off":
		return 0, nil
	}
	t = strings.TrimSuffix(t, "/s")
	t = strings.TrimSpace(t)
	mul := 1.0
	for _, u := range units {
		if rest, ok := strings.CutSuffix(t, u.name); ok {
			t, mul = strings.TrimSpace(rest), u.mul
			break
		}
	}
	if t == "" || strings.ContainsAny(t, "+-_eEpPxX") || strings.EqualFold(t, "inf") || strings.EqualFold(t, "nan") {
		return 0, fmt.Errorf("%w %q: want a positive number and a unit, e.g. 200MB/s or 50MiB/s", ErrInvalid, s)
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%w %q: want a positive number and a unit, e.g. 200MB/s or 50MiB/s", ErrInvalid, s)
	}
	b := v * mul
	if b < 1 {
		if v == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("%w %q: below 1 byte per second", ErrInvalid, s)
	}
	if b > Max {
		return 0, fmt.Errorf("%w %q: above 1PB/s", ErrInvalid, s)
	}
	return int64(b), nil
}

// Format writes bytes per second back in the largest decimal unit that
// keeps it readable ("200MB/s"); 0 is "unlimited".
func Format(bps int64) string {
	if bps <= 0 {
		return "unlimited"
	}
	for _, u := range []struct {
		name string
		mul  int64
	}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
		if bps >= u.mul {
			return strconv.FormatFloat(float64(bps)/float64(u.mul), 'f', -1, 64) + u.name + "/s"
		}
	}
	return strconv.FormatInt(bps, 10) + "B/s"
}
