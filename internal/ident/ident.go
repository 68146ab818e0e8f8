// Package ident is the one rule for the names the grid gives to agents and
// storage nodes. The master refuses an id the agent could not use, and the
// agent applies the same rule to its own id and to every node id the master
// sends, so a name accepted on one side is never refused on the other.
//
// An id becomes a directory name on the agent (the node's data dir under
// storage.data_path), a command-line value and a database key, so the rule is
// the intersection of what is safe for all three on Linux, macOS and Windows:
// 1 to MaxLen bytes of A-Z a-z 0-9 . _ -, starting and ending with a letter or
// a digit (which refuses ".", "..", "-rf", ".hidden" and the trailing dot
// Windows drops), and not a Windows device name (CON, NUL, COM1, ...).
package ident

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLen is the longest id accepted, in bytes.
const MaxLen = 128

// Charset describes the accepted ids for messages.
const Charset = "1-128 of A-Z a-z 0-9 . _ -, starting and ending with a letter or digit"

// ErrInvalid is wrapped by every error of Validate.
var ErrInvalid = errors.New("invalid id")

// Validate checks id against the rule; kind ("agent", "node") names it in
// the error, which says what is wrong and what is accepted.
func Validate(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s id is empty: give a %s id (accepted: %s)", ErrInvalid, kind, kind, Charset)
	}
	if len(id) > MaxLen {
		return fmt.Errorf("%w: %s id is %d bytes long: use at most %d (accepted: %s)", ErrInvalid, kind, len(id), MaxLen, Charset)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !alnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%w: %s id %q contains %q at byte %d: use only A-Z a-z 0-9 . _ - (accepted: %s)", ErrInvalid, kind, id, c, i, Charset)
		}
	}
	if !alnum(id[0]) || !alnum(id[len(id)-1]) {
		return fmt.Errorf("%w: %s id %q must start and end with a letter or digit (accepted: %s)", ErrInvalid, kind, id, Charset)
	}
	if reserved(id) {
		return fmt.Errorf("%w: %s id %q is a Windows device name and cannot name a directory there: choose another", ErrInvalid, kind, id)
	}
	return nil
}

// Valid reports whether id passes Validate.
func Valid(id string) bool { return Validate("", id) == nil }

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// reserved reports Windows device names, which are reserved with any
// extension ("nul.txt") and in any case.
func reserved(id string) bool {
	base, _, _ := strings.Cut(id, ".")
	switch strings.ToUpper(base) {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(base) == 4 {
		p := strings.ToUpper(base[:3])
		if (p == "COM" || p == "LPT") && base[3] >= '0' && base[3] <= '9' {
			return true
		}
	}
	return false
}
