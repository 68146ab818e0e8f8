package limits

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestTime(t *testing.T) {
	for _, sec := range []int64{0, 1, 1_700_000_000, MaxTime.Unix()} {
		tm := time.Unix(sec, 0)
		if sec == 0 {
			tm = time.Time{}
		}
		if err := Time("since", tm); err != nil {
			t.Errorf("Time(%d) = %v, want nil", sec, err)
		}
	}
	for _, sec := range []int64{-1, math.MinInt64, MaxTime.Unix() + 1, 253402300800, math.MaxInt64} {
		if err := Time("since", time.Unix(sec, 0)); !errors.Is(err, ErrLimit) {
			t.Errorf("Time(%d) = %v, want ErrLimit", sec, err)
		}
	}
	// Every accepted time can be encoded as JSON (the store's format).
	if _, err := MaxTime.MarshalJSON(); err != nil {
		t.Errorf("MaxTime.MarshalJSON = %v", err)
	}
}

func TestTextAndMessage(t *testing.T) {
	if err := Text("hostname", "web-1.lan", MaxTextLen); err != nil {
		t.Error(err)
	}
	for _, s := range []string{strings.Repeat("x", MaxTextLen+1), "a\nb", "\x1b[2J", "a\x00", "\xff\xfe", "a\u0085b"} {
		if err := Text("hostname", s, MaxTextLen); !errors.Is(err, ErrLimit) {
			t.Errorf("Text(%q) = %v, want ErrLimit", s, err)
		}
	}
	if err := Message("message", "line 1\nline 2\ttab", MaxMessageLen); err != nil {
		t.Error(err)
	}
	if err := Message("message", strings.Repeat("m", MaxMessageLen+1), MaxMessageLen); !errors.Is(err, ErrLimit) {
		t.Errorf("Message(too long) = %v", err)
	}
}

func TestVersion(t *testing.T) {
	for _, v := range []string{"1.2.3", "0.0.0-dev", "1.0.0-rc.1+build.5"} {
		if err := Version("v", v); err != nil {
			t.Errorf("Version(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"", "latest", "v1.2.3", "1.2", "1.2.3-" + strings.Repeat("a", MaxVersionLen), strings.Repeat("1", 3<<20)} {
		if err := Version("v", v); !errors.Is(err, ErrLimit) {
			t.Errorf("Version(%.40q) = %v, want ErrLimit", v, err)
		}
	}
}

func TestLabels(t *testing.T) {
	if err := Labels(map[string]string{"zone": "eu-1", "rack": "r 7"}); err != nil {
		t.Error(err)
	}
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	cases := []map[string]string{
		many,
		{"": "v"},
		{strings.Repeat("k", MaxLabelKeyLen+1): "v"},
		{"k": strings.Repeat("v", MaxLabelValueLen+1)},
		{"k\n": "v"},
		{"k": "v\x1b"},
	}
	for _, c := range cases {
		if err := Labels(c); !errors.Is(err, ErrLimit) {
			t.Errorf("Labels(%d labels) = %v, want ErrLimit", len(c), err)
		}
	}
}

func TestLogLines(t *testing.T) {
	n, err := LogLines("log", []string{"a", "bc"})
	if err != nil || n != 3 {
		t.Errorf("LogLines = %d, %v", n, err)
	}
	if _, err := LogLines("log", make([]string, MaxLogLines+1)); !errors.Is(err, ErrLimit) {
		t.Errorf("LogLines(too many) = %v", err)
	}
	if _, err := LogLines("log", []string{strings.Repeat("l", MaxLogLineLen+1)}); !errors.Is(err, ErrLimit) {
		t.Errorf("LogLines(too long) = %v", err)
	}
}

// The agent's clipping always yields what the master accepts.
func TestClipIsAccepted(t *testing.T) {
	for _, s := range []string{"", "ok", strings.Repeat("é", 400), "a\nb\x00c\x1b", "\xff\xfe" + strings.Repeat("x", 2000)} {
		if c := ClipText(s, MaxTextLen); Text("t", c, MaxTextLen) != nil {
			t.Errorf("ClipText(%.20q) = %.20q, refused: %v", s, c, Text("t", c, MaxTextLen))
		}
		if c := ClipMessage(s, MaxMessageLen); Message("m", c, MaxMessageLen) != nil || !utf8.ValidString(c) {
			t.Errorf("ClipMessage(%.20q) refused", s)
		}
	}
	lines := make([]string, 80)
	for i := range lines {
		lines[i] = strings.Repeat("x", 2000)
	}
	budget := 3 * MaxLogLineLen
	got := ClipLogLines(lines, &budget)
	if len(got) != 3 || budget != 0 {
		t.Fatalf("ClipLogLines kept %d lines, budget left %d; want 3 and 0", len(got), budget)
	}
	if _, err := LogLines("log", got); err != nil {
		t.Error(err)
	}
	budget = MaxReportLogBytes
	if got := ClipLogLines([]string{"first", "last"}, &budget); len(got) != 2 || got[0] != "first" {
		t.Errorf("ClipLogLines kept %q, want the lines in order", got)
	}
}

func TestUpgradePhase(t *testing.T) {
	for _, p := range UpgradePhases {
		if !UpgradePhase(p) {
			t.Errorf("UpgradePhase(%q) = false", p)
		}
	}
	for _, p := range []string{"", "hacking", "Failed"} {
		if UpgradePhase(p) {
			t.Errorf("UpgradePhase(%q) = true", p)
		}
	}
}
