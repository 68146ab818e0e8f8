package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/actor"
)

// Artifacts an agent can be pinned on (Agent.Pins keys).
const (
	PinStorageServer = "storage-server"
	PinAgent         = "sutra-agent"
)

// Pin events.
const (
	EventAgentPinned   = "AgentPinned"
	EventAgentUnpinned = "AgentUnpinned"
)

// ValidatePin checks a pin request: an agent id, a pinnable artifact and
// an exact version ("latest" is not a pin).
func ValidatePin(id, artifactName, version string) error {
	if err := ValidateID("agent", id); err != nil {
		return err
	}
	if artifactName != PinStorageServer && artifactName != PinAgent {
		return newErr(KindInvalid, "artifact %.64q cannot be pinned (want %s or %s)", artifactName, PinStorageServer, PinAgent)
	}
	if err := limits.Version("version", version); err != nil {
		return newErr(KindInvalid, "pin %s: %s (an exact version like 1.2.3; \"latest\" is not a pin)", artifactName, strings.TrimPrefix(err.Error(), limits.ErrLimit.Error()+": "))
	}
	return nil
}

// pinnedMessage is the refusal of a version change on a pinned agent.
func pinnedMessage(id, artifactName, version string) error {
	return newErr(KindPrecondition, "agent %s is pinned to %s %s; unpin it first (sutra agents unpin %s)", id, artifactName, version, id)
}

// Pin pins agent id's artifact to version: its desired version of that
// artifact becomes version and stays so, whatever SetDesiredVersion for
// every agent or a rollout does, until Unpin. The event names who pinned.
func (f *Fleet) Pin(ctx context.Context, id, artifactName, version string) (Agent, error) {
	if err := ValidatePin(id, artifactName, version); err != nil {
		return Agent{}, err
	}
	return f.changeAgent(ctx, id, func(tx *txn, a *agentState, now time.Time) {
		rec := &a.rec
		if rec.Pins == nil {
			rec.Pins = map[string]string{}
		}
		rec.Pins[artifactName] = version
		if artifactName == PinStorageServer {
			rec.StorageServerVersion = version
		} else {
			rec.DesiredAgentVersion = version
		}
		rec.Generation++
		tx.putAgent(rec)
		f.emit(tx, now, EventAgentPinned, id, "", fmt.Sprintf("%s pinned to %s by %s", artifactName, version, tx.by()))
	})
}

// Unpin lifts agent id's pin on artifactName ("" for every pin). The
// desired versions stay where the pin left them until changed. Unpinning
// an agent without that pin is not an error.
func (f *Fleet) Unpin(ctx context.Context, id, artifactName string) (Agent, error) {
	if err := ValidateID("agent", id); err != nil {
		return Agent{}, err
	}
	if artifactName != "" && artifactName != PinStorageServer && artifactName != PinAgent {
		return Agent{}, newErr(KindInvalid, "artifact %.64q cannot be pinned (want %s or %s)", artifactName, PinStorageServer, PinAgent)
	}
	return f.changeAgent(ctx, id, func(tx *txn, a *agentState, now time.Time) {
		rec := &a.rec
		var lifted []string
		for _, name := range slices.Sorted(maps.Keys(rec.Pins)) {
			if artifactName == "" || name == artifactName {
				lifted = append(lifted, name+" "+rec.Pins[name])
				delete(rec.Pins, name)
			}
		}
		if len(rec.Pins) == 0 {
			rec.Pins = nil
		}
		if len(lifted) > 0 {
			tx.putAgent(rec)
			f.emit(tx, now, EventAgentUnpinned, id, "", fmt.Sprintf("pin %s lifted by %s", strings.Join(lifted, ", "), tx.by()))
		}
	})
}

// changeAgent applies change to agent id (unknown: a not-found error)
// under the fleet's lock, commits it, and returns the agent as changed;
// a change lost to another master's write is read again and redone.
func (f *Fleet) changeAgent(ctx context.Context, id string, change func(tx *txn, a *agentState, now time.Time)) (Agent, error) {
	var out Agent
	err := f.retry(ctx, func() (*ticket, error) {
		now := f.clock.Now()
		tx := txn{actor: actor.From(ctx)}
		f.mu.Lock()
		defer f.mu.Unlock()
		a := f.agents[id]
		if a == nil {
			return nil, unknownAgent(id)
		}
		change(&tx, a, now)
		out = f.agentLocked(a)
		return f.enqueue(&tx), nil
	})
	return out, err
}
