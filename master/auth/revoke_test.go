package auth

import (
	"context"
	"errors"
	"testing"
)

// The stream registry holds only live streams: CloseAgent cancels an
// agent's streams with the revocation as cause and nothing else's, and
// every entry goes away when its stream ends, closed or not.
func TestStreamRegistry(t *testing.T) {
	var r streamRegistry
	cause := errors.New("revoked")
	ctxA1, doneA1 := r.track(context.Background(), "a")
	ctxA2, doneA2 := r.track(context.Background(), "a")
	ctxB, doneB := r.track(context.Background(), "b")
	if n := r.open("a"); n != 2 {
		t.Fatalf("open(a) = %d, want 2", n)
	}
	if n := r.close("a", revokedCause{err: cause}); n != 2 {
		t.Fatalf("close(a) = %d, want 2", n)
	}
	for _, ctx := range []context.Context{ctxA1, ctxA2} {
		var rc revokedCause
		if !errors.As(context.Cause(ctx), &rc) || rc.err != cause {
			t.Fatalf("cause of a closed stream = %v, want the revocation", context.Cause(ctx))
		}
	}
	if ctxB.Err() != nil {
		t.Fatal("closing agent a ended agent b's stream")
	}
	// A new stream of a after the close, then the old ones end.
	_, doneA3 := r.track(context.Background(), "a")
	doneA1()
	doneA2()
	if n := r.open("a"); n != 1 {
		t.Fatalf("open(a) = %d after old streams ended, want the new one", n)
	}
	doneA3()
	doneB()
	if len(r.m) != 0 {
		t.Fatalf("registry keeps %d agents after every stream ended", len(r.m))
	}
	if n := r.close("nobody", cause); n != 0 {
		t.Fatalf("close(nobody) = %d", n)
	}
}
