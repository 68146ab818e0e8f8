package actor

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestActors(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Operator("127.0.0.1:5000"), "operator@127.0.0.1"},
		{Operator("[::1]:7000"), "operator@::1"},
		{Operator("10.1.2.3"), "operator@10.1.2.3"},
		{Operator(""), "operator@unknown"},
		{Agent("a1"), "agent:a1"},
		{Token("t1"), "token:t1"},
		{From(context.Background()), Master},
		{From(With(context.Background(), "")), Master},
		{From(With(context.Background(), "agent:x")), "agent:x"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	long := From(With(context.Background(), strings.Repeat("é", 200)))
	if len(long) > maxLen || !utf8.ValidString(long) {
		t.Errorf("a long actor is kept as %d bytes (valid UTF-8 %v), want at most %d of valid UTF-8", len(long), utf8.ValidString(long), maxLen)
	}
}
