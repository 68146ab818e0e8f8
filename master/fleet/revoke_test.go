package fleet

import (
	"context"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/actor"
)

// The denylist: a revocation names its actor, refuses every certificate
// of the id, leaves the agent's record and nodes alone, survives a
// restart; once lifted, certificates from before it stay refused except
// those issued after it was lifted (AllowCert) or dated after it; the
// master's own events are by "master".
func TestRevocation(t *testing.T) {
	e := newEnv(t)
	e.register("a1", 2)
	n, err := e.f.Spawn(context.Background(), SpawnRequest{AgentID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	op := actor.With(context.Background(), actor.Operator("10.0.0.9:4000"))
	old := e.clock.Now().Add(-time.Hour)
	e.clock.Advance(time.Second)

	r, err := e.f.Revoke(op, "a1", "lost")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Active || r.By != "operator@10.0.0.9" || r.Reason != "lost" {
		t.Fatalf("Revoke = %+v", r)
	}
	if _, err := e.f.Revoke(op, "a1", "again"); err != nil {
		t.Fatal(err)
	}
	if r2, _ := e.f.Revocation("a1"); r2.Reason != "lost" {
		t.Fatalf("a second revocation replaced the first: %+v", r2)
	}
	if _, refused := e.f.CertRevoked("a1", big.NewInt(1), e.clock.Now().Add(time.Hour)); !refused {
		t.Fatal("a certificate of a revoked agent is accepted")
	}
	if _, refused := e.f.CertRevoked("a2", big.NewInt(1), old); refused {
		t.Fatal("another agent's certificate is refused")
	}
	a, _ := e.f.Agent("a1")
	if !a.Revoked || a.RevokedBy != "operator@10.0.0.9" || a.RevokedAt.IsZero() {
		t.Fatalf("Agent(a1) = revoked %v by %q at %v", a.Revoked, a.RevokedBy, a.RevokedAt)
	}
	if got, _ := e.f.Node(n.ID); !got.Desired {
		t.Fatal("revocation changed the agent's nodes")
	}
	evs := e.f.Events(0, 0)
	last := evs[len(evs)-1]
	if last.Type != EventAgentRevoked || last.Actor != "operator@10.0.0.9" || last.AgentID != "a1" {
		t.Fatalf("last event %+v, want AgentRevoked by the operator", last)
	}

	e.restart()
	if _, refused := e.f.CertRevoked("a1", big.NewInt(1), old); !refused {
		t.Fatal("the revocation did not survive a restart")
	}
	if a, _ := e.f.Agent("a1"); !a.Revoked {
		t.Fatal("Agent(a1).Revoked lost across a restart")
	}

	if _, err := e.f.Unrevoke(op, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Unrevoke(op, "a1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Unrevoke = %v, want not found", err)
	}
	if _, refused := e.f.CertRevoked("a1", big.NewInt(1), old); !refused {
		t.Fatal("a certificate from before the revocation is accepted after unrevoke")
	}
	// A new certificate, backdated before the revocation, issued after unrevoke.
	if err := e.f.AllowCert(op, "a1", big.NewInt(99)); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if _, refused := e.f.CertRevoked("a1", big.NewInt(99), old); refused {
		t.Fatal("a certificate issued after unrevoke is refused")
	}
	if _, refused := e.f.CertRevoked("a1", big.NewInt(1), old); !refused {
		t.Fatal("the old certificate is accepted after a restart")
	}
	if _, refused := e.f.CertRevoked("a1", big.NewInt(5), e.clock.Now().Add(time.Minute)); refused {
		t.Fatal("a certificate dated after the revocation is refused")
	}
	if a, _ := e.f.Agent("a1"); a.Revoked {
		t.Fatal("Agent(a1).Revoked after unrevoke")
	}

	// The master's own work is by "master".
	e.register("a3", 1)
	e.clock.Advance(time.Hour)
	e.sweep()
	evs = e.f.Events(0, 0)
	if last := evs[len(evs)-1]; last.Type != EventAgentOffline || last.Actor != actor.Master {
		t.Fatalf("sweep event %+v, want AgentOffline by master", last)
	}

	for _, bad := range []struct{ id, reason string }{{"", ""}, {"a b", ""}, {"a1", "x\x00"}, {"a1", string(make([]byte, MaxRevokeReason+1))}} {
		if _, err := e.f.Revoke(op, bad.id, bad.reason); !errors.Is(err, ErrInvalid) {
			t.Errorf("Revoke(%q, %q) = %v, want invalid", bad.id, bad.reason, err)
		}
	}
}
