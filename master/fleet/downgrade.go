package fleet

import (
	"fmt"
	"time"

	"github.com/sutragrid/sutra/internal/semver"
)

// EventDowngrade: an operator asked an agent for an explicit version lower
// than what it runs (a rollback or a pin). Agents accept it (only "latest"
// below their highest committed version is refused as a rollback attack);
// the event names who asked (Event.Actor).
const EventDowngrade = "downgrade"

// emitDowngrades records a downgrade event for each explicit version of c
// below what agent a runs: its own version for the agent, the highest
// version its nodes report for storage-server. Called with f.mu held.
func (f *Fleet) emitDowngrades(tx *txn, now time.Time, a *agentState, c VersionChange) {
	if v := c.AgentVersion; explicit(v) && explicit(a.rec.AgentVersion) && semver.Compare(v, a.rec.AgentVersion) < 0 {
		f.emit(tx, now, EventDowngrade, a.rec.ID, "", fmt.Sprintf("agent %s asked while %s runs", v, a.rec.AgentVersion))
	}
	v := c.StorageServerVersion
	if !explicit(v) {
		return
	}
	running := ""
	for _, n := range a.nodes {
		if n.Status != nil && explicit(n.Status.Version) && (running == "" || semver.Compare(n.Status.Version, running) > 0) {
			running = n.Status.Version
		}
	}
	if running != "" && semver.Compare(v, running) < 0 {
		f.emit(tx, now, EventDowngrade, a.rec.ID, "", fmt.Sprintf("storage-server %s asked while nodes run %s", v, running))
	}
}

// explicit reports whether v is an exact semantic version (not "latest").
func explicit(v string) bool {
	_, err := semver.Parse(v)
	return err == nil
}
