package fleet

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sutragrid/sutra/internal/ident"
	"github.com/sutragrid/sutra/internal/limits"
)

// Kind classifies fleet errors so that adapters can map them to status codes.
type Kind int

// Error kinds.
const (
	KindInvalid      Kind = iota + 1 // bad input
	KindNotFound                     // unknown agent or node
	KindExists                       // id already taken
	KindPrecondition                 // e.g. spawning on an offline agent
	KindExhausted                    // no capacity left
	KindUnavailable                  // the store failed
	KindInternal                     // a bug in the master
)

// Sentinels to test with errors.Is.
var (
	ErrInvalid      = &Error{Kind: KindInvalid, Msg: "invalid argument"}
	ErrNotFound     = &Error{Kind: KindNotFound, Msg: "not found"}
	ErrExists       = &Error{Kind: KindExists, Msg: "already exists"}
	ErrPrecondition = &Error{Kind: KindPrecondition, Msg: "failed precondition"}
	ErrExhausted    = &Error{Kind: KindExhausted, Msg: "no capacity"}
	ErrUnavailable  = &Error{Kind: KindUnavailable, Msg: "unavailable"}
)

// Error is a fleet error whose message tells the caller what to do.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches any *Error of the same kind, so errors.Is(err, ErrNotFound) works.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Kind == e.Kind
}

func newErr(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// MaxIDLen is the longest agent or node id accepted, in bytes.
const MaxIDLen = ident.MaxLen

// ValidateID checks an agent or node id by the rule the agent applies too
// (internal/ident: 1-128 bytes of A-Z a-z 0-9 . _ -, starting and ending
// with a letter or digit, no Windows device name); kind is "agent" or
// "node", used in the message.
func ValidateID(kind, id string) error {
	if err := ident.Validate(kind, id); err != nil {
		return &Error{Kind: KindInvalid, Msg: strings.TrimPrefix(err.Error(), ident.ErrInvalid.Error()+": ")}
	}
	return nil
}

// validateKnownID checks an id used to look up an existing record. It
// accepts the rule of earlier versions too (1-128 bytes of A-Z a-z 0-9 . _ -),
// so that an agent or node recorded before the rule tightened can still be
// shown, paged past and removed; new records always pass ValidateID.
func validateKnownID(kind, id string) error {
	if id == "" || len(id) > MaxIDLen || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) >= 0 {
		return ValidateID(kind, id)
	}
	return nil
}

// invalid wraps a limits error as an ErrInvalid fleet error.
func invalid(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: KindInvalid, Msg: strings.TrimPrefix(err.Error(), limits.ErrLimit.Error()+": ")}
}
