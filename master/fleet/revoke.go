package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/store"
)

// Revocation is the denylist record of one agent id (store.TableRevoked),
// checked by master/auth on every call a certificate makes.
//
// While Active, every certificate naming the agent is refused. An operator
// lifts it with Unrevoke; the record stays, and certificates issued before
// RevokedAt stay refused (the machine that held them must enroll again with
// a new join token): only those whose serial is in Serials (issued after
// the revocation was lifted) or whose NotBefore is after RevokedAt are
// accepted. The master's own work never changes a revocation.
type Revocation struct {
	AgentID   string    `json:"agent_id"`
	RevokedAt time.Time `json:"revoked_at"`
	By        string    `json:"by"`
	Reason    string    `json:"reason,omitempty"`
	Active    bool      `json:"active"`
	// UnrevokedAt and UnrevokedBy are set once the revocation is lifted.
	UnrevokedAt time.Time `json:"unrevoked_at,omitzero"`
	UnrevokedBy string    `json:"unrevoked_by,omitempty"`
	// Serials (hex) of certificates issued for the id after the revocation
	// was lifted, newest last, at most maxAllowedSerials.
	Serials []string `json:"serials,omitempty"`

	// rev is the store revision the record was read or written at (in
	// memory only; zero in clones handed out).
	rev store.Revision
}

// MaxRevokeReason bounds a revocation's reason.
const MaxRevokeReason = 256

// maxAllowedSerials bounds Revocation.Serials: a certificate issued more
// than backdating after RevokedAt does not need to be listed.
const maxAllowedSerials = 8

func (f *Fleet) loadRevoked(ctx context.Context) error {
	f.revoked = map[string]*Revocation{}
	return f.st.Scan(ctx, store.TableRevoked, func(k, v []byte) error {
		var r Revocation
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode revocation %q: %w", k, err)
		}
		if r.AgentID != string(k) {
			return fmt.Errorf("decode revocation %q: it names agent %q", k, r.AgentID)
		}
		r.rev = revUnknown
		f.revoked[r.AgentID] = &r
		return nil
	})
}

// Revoke revokes every certificate of agent id, now and durably (the
// denylist refuses the id in memory before the commit, so no call gets
// through while it is written; a failed commit leaves it refused here and
// a retry writes it again): the
// caller's actor (master/actor) is recorded as who did it, with reason. An
// id that is already revoked keeps its first revocation. The agent's
// record, if any, and its nodes are not touched. The id need not be known
// (an agent may have enrolled and not registered yet).
func (f *Fleet) Revoke(ctx context.Context, id, reason string) (Revocation, error) {
	if err := ValidateID("agent", id); err != nil {
		return Revocation{}, err
	}
	if err := limits.Text("reason", reason, MaxRevokeReason); err != nil {
		return Revocation{}, &Error{Kind: KindInvalid, Msg: err.Error()}
	}
	var out Revocation
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		tx := txn{actor: actor.From(ctx)}
		f.mu.Lock()
		defer f.mu.Unlock()
		if r := f.revoked[id]; r != nil && r.Active {
			// Written again (no event): a retry after a failed commit makes
			// the first revocation durable.
			tx.put(store.TableRevoked, []byte(id), r, r.rev)
			out = r.clone()
			return f.enqueue(&tx), nil
		}
		old, known := f.revoked[id]
		if !known && len(f.revoked) >= f.opts.MaxAgents {
			return nil, newErr(KindExhausted, "%d agent ids are on the revocation list, the master's limit (--max-agents)", len(f.revoked))
		}
		r := &Revocation{AgentID: id, RevokedAt: now, By: tx.actor, Reason: reason, Active: true}
		if r.By == "" {
			r.By = actor.Master
		}
		if old != nil {
			r.rev = old.rev
		}
		f.revoked[id] = r
		tx.put(store.TableRevoked, []byte(id), r, r.rev)
		msg := "certificates revoked by " + r.By
		if reason != "" {
			msg += ": " + reason
		}
		f.emit(&tx, now, EventAgentRevoked, id, "", msg)
		out = r.clone()
		return f.enqueue(&tx), nil
	})
	if err != nil {
		return Revocation{}, err
	}
	return out, nil
}

// Unrevoke lifts the revocation of agent id (NotFound if it is not
// revoked). Certificates issued before the revocation stay refused.
func (f *Fleet) Unrevoke(ctx context.Context, id string) (Revocation, error) {
	if err := ValidateID("agent", id); err != nil {
		return Revocation{}, err
	}
	var out Revocation
	var now time.Time
	var old *Revocation
	err := f.retry(ctx, func() (*ticket, error) {
		now = f.clock.Now()
		tx := txn{actor: actor.From(ctx)}
		f.mu.Lock()
		defer f.mu.Unlock()
		old = f.revoked[id]
		if old == nil || !old.Active {
			return nil, newErr(KindNotFound, "agent %s is not revoked: see 'sutra agents'", id)
		}
		// Memory changes only once the lift is durable: until then the
		// agent stays refused (the safe side).
		r := *old
		r.Serials = slices.Clone(old.Serials)
		r.Active, r.UnrevokedAt, r.UnrevokedBy = false, now, tx.actor
		tx.put(store.TableRevoked, []byte(id), &r, old.rev)
		f.emit(&tx, now, EventAgentUnrevoked, id, "", fmt.Sprintf("revocation of %s lifted by %s; certificates issued before it stay refused: enroll the agent again with a new join token", r.RevokedAt.UTC().Format(time.RFC3339), tx.actor))
		out = r.clone()
		if tx.err == nil {
			f.revoked[id] = &r
		}
		return f.enqueue(&tx), nil
	})
	if err != nil {
		// Not durable: stay revoked (the safe side), unless changed since.
		f.mu.Lock()
		if cur := f.revoked[id]; old != nil && cur != nil && !cur.Active && cur.UnrevokedAt.Equal(now) {
			f.revoked[id] = old
		}
		f.mu.Unlock()
		return Revocation{}, err
	}
	return out, nil
}

// Revocation returns agent id's revocation record, if any (Active or not).
func (f *Fleet) Revocation(id string) (Revocation, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.revoked[id]
	if r == nil {
		return Revocation{}, false
	}
	return r.clone(), true
}

// CertRevoked reports whether a certificate of agent id with serial and
// notBefore is refused by a revocation, and the revocation that refuses it.
func (f *Fleet) CertRevoked(id string, serial *big.Int, notBefore time.Time) (Revocation, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.revoked[id]
	if r == nil {
		return Revocation{}, false
	}
	if r.Active {
		return r.clone(), true
	}
	if notBefore.After(r.RevokedAt) {
		return Revocation{}, false
	}
	if serial != nil && slices.Contains(r.Serials, serial.Text(16)) {
		return Revocation{}, false
	}
	return r.clone(), true
}

// AllowCert records that the certificate with serial was issued to agent
// id after its revocation was lifted, so that it is accepted although its
// (backdated) NotBefore precedes the revocation. Without a lifted
// revocation of id it does nothing.
func (f *Fleet) AllowCert(ctx context.Context, id string, serial *big.Int) error {
	if serial == nil {
		return nil
	}
	return f.retry(ctx, func() (*ticket, error) {
		tx := txn{actor: actor.From(ctx)}
		f.mu.Lock()
		defer f.mu.Unlock()
		old := f.revoked[id]
		if old == nil || old.Active {
			return nil, nil
		}
		r := *old
		r.Serials = append(slices.Clone(old.Serials), serial.Text(16))
		if over := len(r.Serials) - maxAllowedSerials; over > 0 {
			r.Serials = r.Serials[over:]
		}
		f.revoked[id] = &r
		tx.put(store.TableRevoked, []byte(id), &r, r.rev)
		return f.enqueue(&tx), nil
	})
}

// RevokedMessage is what a caller refused by r is told.
func (r Revocation) RevokedMessage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "agent %s's certificate was revoked at %s by %s", r.AgentID, r.RevokedAt.UTC().Format(time.RFC3339), r.By)
	if r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	if r.Active {
		b.WriteString("; to bring it back, an operator runs 'sutra agents unrevoke " + r.AgentID + "', then the agent enrolls again with a new join token (sutra tokens create)")
	} else {
		b.WriteString("; the revocation was lifted but certificates issued before it stay refused: enroll the agent again with a new join token (sutra tokens create)")
	}
	return b.String()
}

func (r *Revocation) clone() Revocation {
	c := *r
	c.Serials = slices.Clone(r.Serials)
	c.rev = 0
	return c
}
