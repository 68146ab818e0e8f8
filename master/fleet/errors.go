package fleet

import (
	"errors"
	"fmt"
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
const MaxIDLen = 128

// ValidateID checks an agent or node id: 1 to 128 bytes of A-Z a-z 0-9 . _ -
// (kind is "agent" or "node", used in the message).
func ValidateID(kind, id string) error {
	if id == "" {
		return newErr(KindInvalid, "%s id is empty: give a %s id (1-%d of A-Z a-z 0-9 . _ -)", kind, kind, MaxIDLen)
	}
	if len(id) > MaxIDLen {
		return newErr(KindInvalid, "%s id is %d bytes long: use at most %d bytes of A-Z a-z 0-9 . _ -", kind, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return newErr(KindInvalid, "%s id %q contains %q at byte %d: use only A-Z a-z 0-9 . _ -", kind, id, c, i)
		}
	}
	return nil
}
