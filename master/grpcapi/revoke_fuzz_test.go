package grpcapi

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// FuzzRevokeAgent drives the RevokeAgent and UnrevokeAgent handlers with
// hostile ids and reasons on a real fleet (bbolt): every answer is a
// success or INVALID_ARGUMENT (NOT_FOUND for unrevoking what is not
// revoked), a success is on the denylist with its reason and actor, every
// event it causes is a valid protobuf message, and lifting it keeps the
// certificates issued before it refused.
func FuzzRevokeAgent(f *testing.F) {
	for _, s := range []struct{ id, reason string }{
		{"a1", "stolen"},
		{"", ""},
		{"a", strings.Repeat("r", 256)},
		{"a", strings.Repeat("r", 257)},
		{"a\x00b", "x"},
		{"a1", "bad\xffutf8"},
		{"a1", "line\nbreak"},
		{"../etc/passwd", ""},
		{strings.Repeat("a", 129), ""},
		{"agent-1", "💥 émoji"},
		{"a1", "\u202e rtl"},
		{" a1", ""},
	} {
		f.Add(s.id, s.reason)
	}
	st, err := store.OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	fl, err := fleet.New(context.Background(), fleet.Options{Store: st, MasterVersion: "1.0.0"})
	if err != nil {
		f.Fatal(err)
	}
	s := New(fl, nil)
	ctx := actor.With(context.Background(), actor.Operator("127.0.0.1:5555"))
	f.Fuzz(func(t *testing.T, id, reason string) {
		before := time.Now().Add(-time.Hour)
		seq := fl.LastSeq()
		a, err := s.RevokeAgent(ctx, &gridv1.RevokeAgentRequest{AgentId: id, Reason: reason})
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument {
				t.Fatalf("RevokeAgent(%q, %q) = %v, want OK or INVALID_ARGUMENT", id, reason, err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("RevokeAgent(%q) error is not UTF-8", id)
			}
			if _, ok := fl.Revocation(id); ok && fleet.ValidateID("agent", id) != nil {
				t.Fatalf("invalid id %q is on the denylist", id)
			}
			return
		}
		if a.GetAgentId() != id || !a.GetRevoked() || a.GetRevokedBy() != "operator@127.0.0.1" {
			t.Fatalf("RevokeAgent(%q) = %v", id, a)
		}
		r, ok := fl.Revocation(id)
		if !ok || !r.Active {
			t.Fatalf("RevokeAgent(%q) succeeded but the id is not revoked", id)
		}
		if _, refused := fl.CertRevoked(id, big.NewInt(7), time.Now()); !refused {
			t.Fatalf("a certificate of revoked %q is accepted", id)
		}
		for _, e := range fl.Events(seq, 0) {
			if _, err := proto.Marshal(eventToPB(e)); err != nil {
				t.Fatalf("event %v cannot be sent: %v", e, err)
			}
			if e.Actor != "operator@127.0.0.1" {
				t.Fatalf("event %s actor %q", e.Type, e.Actor)
			}
		}
		if _, err := s.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: id}); err != nil {
			t.Fatalf("UnrevokeAgent(%q) = %v", id, err)
		}
		if _, err := s.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: id}); status.Code(err) != codes.NotFound {
			t.Fatalf("second UnrevokeAgent(%q) = %v, want NOT_FOUND", id, err)
		}
		if _, refused := fl.CertRevoked(id, big.NewInt(7), before); !refused {
			t.Fatalf("a certificate issued before %q's revocation is accepted after unrevoke", id)
		}
		if _, refused := fl.CertRevoked(id, big.NewInt(7), time.Now().Add(time.Minute)); refused {
			t.Fatalf("a certificate issued after %q's revocation was lifted is refused", id)
		}
	})
}
