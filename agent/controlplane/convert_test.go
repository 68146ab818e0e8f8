package controlplane

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sutragrid/sutra/supervisor"
)

// A start error quoting two checksums is longer than the master accepts for
// last_exit; the report is clipped instead of rejected as a whole.
func TestNodesToProtoClipsLongFields(t *testing.T) {
	long := "start failed: pre-start check: " + strings.Repeat("é", 300)
	got := nodesToProto([]NodeStatus{{NodeID: "n1", State: supervisor.StateBackoff, LastExit: long, Message: strings.Repeat("m", 5000), Version: "1.0.0"}})[0]
	if len(got.GetLastExit()) > maxFieldLen || !utf8.ValidString(got.GetLastExit()) || !strings.HasPrefix(got.GetLastExit(), "start failed") {
		t.Errorf("last_exit clipped to %d bytes (valid UTF-8 %v): %q", len(got.GetLastExit()), utf8.ValidString(got.GetLastExit()), got.GetLastExit())
	}
	if len(got.GetMessage()) > maxMessageLen {
		t.Errorf("message is %d bytes, want at most %d", len(got.GetMessage()), maxMessageLen)
	}
	if got.GetVersion() != "1.0.0" {
		t.Errorf("version = %q, want 1.0.0 unchanged", got.GetVersion())
	}
}

func FuzzClip(f *testing.F) {
	for _, s := range []string{"", "abc", strings.Repeat("é", 200), strings.Repeat("x", 300), "\xf4", "ok\xffok"} {
		f.Add(s, 10)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 4 || n > 4096 {
			return
		}
		got := clip(s, n)
		if len(got) > n {
			t.Fatalf("clip(%q, %d) = %q: %d bytes", s, n, got, len(got))
		}
		if len(s) <= n && utf8.ValidString(s) && got != s {
			t.Fatalf("clip(%q, %d) = %q, want it unchanged", s, n, got)
		}
		// Invalid UTF-8 is repaired (the master refuses it), never passed on.
		if !utf8.ValidString(got) {
			t.Fatalf("clip(%q, %d) = %q: invalid UTF-8", s, n, got)
		}
	})
}
