package ratespec

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"", 0}, {"0", 0}, {"unlimited", 0}, {"OFF", 0}, {"0MB/s", 0},
		{"200MB/s", 200e6}, {"200 MB/s", 200e6}, {"50MiB/s", 50 << 20}, {"1.5GB/s", 1.5e9},
		{"800KB", 800e3}, {"4M", 4e6}, {"1024", 1024}, {"1B/s", 1}, {" 10kib/s ", 10 << 10},
		{"1PB", 0}, // unknown unit: error below
	} {
		got, err := Parse(tc.in)
		if tc.in == "1PB" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %d, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"-1MB/s", "fast", "1e9", "NaN", "inf", "0.5B/s", "MB/s", "1..2MB", "2000TB/s", "0x10", "+5MB", "1_000"} {
		if got, err := Parse(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %d, %v; want ErrInvalid", bad, got, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[int64]string{0: "unlimited", 200e6: "200MB/s", 1.5e9: "1.5GB/s", 999: "999B/s", 4e6: "4MB/s"} {
		if got := Format(in); got != want {
			t.Errorf("Format(%d) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"200MB/s", "50MiB/s", "", "unlimited", "-1", "1e400", "NaN", "inf", "\x00", "9999999999999999999TB/s",
		"0.0000001KB", "1.5gib/s", "  /s", "b", "kib", "1/s/s", "１MB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if v < 0 || v > Max {
			t.Fatalf("Parse(%q) = %d, out of range", s, v)
		}
		if v > 0 {
			// What Format prints parses back to within rounding.
			back, err := Parse(Format(v))
			if err != nil || back < v-v/1000-1 || back > v+v/1000+1 {
				t.Fatalf("Parse(Format(%d)=%q) = %d, %v", v, Format(v), back, err)
			}
		}
	})
}
