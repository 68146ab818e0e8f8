// Package limits holds the bounds of the grid's control-plane contract, in
// one place for both sides: the master refuses a request that exceeds them
// (InvalidArgument, nothing truncated), and the agent clips what it sends to
// them, so that a long log line or a start error quoting two checksums never
// keeps an agent from heartbeating.
//
// The numbers are chosen so that the largest legitimate registration (every
// field at its limit, MaxNodesPerAgent nodes, a full log budget) and the
// largest desired state fit well inside MaxMsgSize, the message size both
// sides accept.
package limits

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sutragrid/sutra/internal/semver"
	"github.com/sutragrid/sutra/internal/upgradephase"
)

// Bounds of the control-plane contract.
const (
	// MaxMsgSize is the largest gRPC message the master receives and the
	// agent accepts (gRPC's default receive limit).
	MaxMsgSize = 4 << 20

	// MaxTextLen bounds one-line texts: hostname, endpoint, last exit.
	MaxTextLen = 256
	// MaxMessageLen bounds free-text messages (node and upgrade messages).
	MaxMessageLen = 1024
	// MaxVersionLen bounds a version string ("latest" or a semantic version).
	MaxVersionLen = 64

	// MaxLabels bounds an agent's labels; keys are 1 to MaxLabelKeyLen
	// bytes, values up to MaxLabelValueLen, both printable.
	MaxLabels        = 64
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 256

	// MaxLogLines bounds the last log lines of one node or upgrade, each
	// at most MaxLogLineLen bytes. The agent spends at most
	// MaxReportLogBytes on the log lines of all nodes of one report, so
	// that its largest report fits in MaxMsgSize (which is what bounds a
	// report on the master's side).
	MaxLogLines       = 50
	MaxLogLineLen     = 512
	MaxReportLogBytes = 1 << 20

	// MaxStorageNodes is the largest max_storage_nodes an agent may
	// announce, and MaxNodesPerAgent the most nodes one agent may report
	// or hold (desired plus stopping).
	MaxStorageNodes  = 1000
	MaxNodesPerAgent = 1000

	// MaxPID is the largest process id (a DWORD on Windows, 2^22 on Linux).
	MaxPID = 1<<32 - 1
	// MaxRestartCount bounds a node's reported restart count.
	MaxRestartCount = 1<<31 - 1
	// MaxPort is the largest TCP port.
	MaxPort = 65535
)

// Timestamps on the wire are Unix seconds, 0 meaning unset. A clock may be
// off by years (a board without a real-time clock starts in 1970), so any
// time from the epoch to the end of year 9999 is accepted; later ones cannot
// be stored or shown (RFC 3339 has four-digit years) and earlier ones come
// only from a broken clock.
var (
	MinTime = time.Unix(0, 0).UTC()
	MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// ErrLimit is wrapped by every error of this package.
var ErrLimit = errors.New("out of limits")

func fail(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrLimit}, args...)...)
}

// Time checks a reported time: zero (unset) or between MinTime and MaxTime.
func Time(field string, t time.Time) error {
	if t.IsZero() || !t.Before(MinTime) && !t.After(MaxTime) {
		return nil
	}
	return fail("%s %d (unix seconds) is out of range: send 0 or a time from %d to %d (check the agent's clock)",
		field, t.Unix(), MinTime.Unix(), MaxTime.Unix())
}

// Text checks a one-line text: at most max bytes of valid UTF-8 without
// control characters.
func Text(field, s string, max int) error {
	if len(s) > max {
		return fail("%s is %d bytes long: at most %d are accepted", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fail("%s is not valid UTF-8", field)
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fail("%s contains the control character %U at byte %d: send printable text", field, r, i)
	}
	return nil
}

// Message checks a free text: at most max bytes of valid UTF-8 (newlines
// and tabs are allowed).
func Message(field, s string, max int) error {
	if len(s) > max {
		return fail("%s is %d bytes long: at most %d are accepted", field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fail("%s is not valid UTF-8", field)
	}
	return nil
}

// LogLines checks the last log lines of one node or upgrade and returns
// their total size in bytes.
func LogLines(field string, lines []string) (int, error) {
	if len(lines) > MaxLogLines {
		return 0, fail("%s has %d lines: at most %d are accepted", field, len(lines), MaxLogLines)
	}
	n := 0
	for i, l := range lines {
		if err := Message(fmt.Sprintf("%s line %d", field, i+1), l, MaxLogLineLen); err != nil {
			return 0, err
		}
		n += len(l)
	}
	return n, nil
}

// Version checks an exact version: a strict semantic version of at most
// MaxVersionLen bytes.
func Version(field, v string) error {
	if len(v) > MaxVersionLen {
		return fail("%s is %d bytes long: a version has at most %d", field, len(v), MaxVersionLen)
	}
	if _, err := semver.Parse(v); err != nil {
		return fail("%s %q is not a semantic version like 1.2.3: %v", field, v, err)
	}
	return nil
}

// Label checks one label.
func Label(k, v string) error {
	if k == "" {
		return fail("a label has an empty key: give every label a key")
	}
	if err := Text("label key", k, MaxLabelKeyLen); err != nil {
		return err
	}
	return Text(fmt.Sprintf("label %q", k), v, MaxLabelValueLen)
}

// Labels checks a label set.
func Labels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fail("%d labels: at most %d are accepted", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if err := Label(k, v); err != nil {
			return err
		}
	}
	return nil
}

// UpgradePhases are the phases of an agent self-update, as the agent
// reports them (empty: no upgrade); internal/upgradephase defines them.
var UpgradePhases = func() []string {
	names := make([]string, len(upgradephase.All))
	for i, p := range upgradephase.All {
		names[i] = string(p)
	}
	return names
}()

// UpgradePhase reports whether p is a known upgrade phase.
func UpgradePhase(p string) bool { return upgradephase.Valid(upgradephase.Phase(p)) }

// ClipText makes s acceptable to Text with the same max: invalid UTF-8 and
// control characters become spaces, and a text too long is cut on a rune
// boundary, marked with "…".
func ClipText(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, " ")
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, s)
	}
	return clip(s, max)
}

// ClipMessage makes s acceptable to Message with the same max.
func ClipMessage(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, " ")
	}
	return clip(s, max)
}

// ClipLogLines keeps the last MaxLogLines lines, each clipped to
// MaxLogLineLen, spending at most *budget bytes (decremented); lines beyond
// the budget are dropped, oldest first.
func ClipLogLines(lines []string, budget *int) []string {
	if len(lines) > MaxLogLines {
		lines = lines[len(lines)-MaxLogLines:]
	}
	out := make([]string, 0, len(lines))
	for i := len(lines) - 1; i >= 0; i-- {
		l := ClipMessage(lines[i], MaxLogLineLen)
		if len(l) > *budget {
			break
		}
		*budget -= len(l)
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
