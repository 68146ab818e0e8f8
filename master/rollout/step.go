package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/upgradephase"
	"github.com/sutragrid/sutra/master/fleet"
)

// View is the fleet as Step sees it: the agents by id.
type View map[string]fleet.Agent

// NewView indexes agents by id.
func NewView(agents []fleet.Agent) View {
	v := make(View, len(agents))
	for _, a := range agents {
		v[a.ID] = a
	}
	return v
}

// health is an agent's verdict against version v.
type health int

const (
	notYet health = iota
	healthy
	broken
)

// judge tells whether agent a runs v healthily, is not there yet, or
// failed (with the reason and the last log lines it reported).
func judge(a fleet.Agent, artifact, v string, since time.Time) (health, string, []string) {
	if artifact == ArtifactAgent {
		u := a.Upgrade
		if u != nil && u.ToVersion == v && !u.Updated.Before(since) {
			switch upgradephase.Phase(u.Phase) {
			case upgradephase.RolledBack, upgradephase.Failed:
				return broken, fmt.Sprintf("self-update to %s %s: %s", v, u.Phase, clip(u.Message, 300)), u.LastLogLines
			}
		}
		if a.AgentVersion == v && a.Health == fleet.Healthy && (u == nil || (u.Phase == string(upgradephase.Committed) && u.ToVersion == v)) {
			return healthy, "", nil
		}
		return notYet, "", nil
	}
	for _, n := range a.Nodes {
		if n.Version != v && strings.Contains(n.Message, "storage-server "+v+" failed") {
			return broken, fmt.Sprintf("node %s upgrade to %s rolled back: %s", n.NodeID, v, clip(n.Message, 300)), n.LastLogLines
		}
		if n.Version == v && n.State == fleet.NodeFailed {
			return broken, fmt.Sprintf("node %s failed on %s: %s", n.NodeID, v, clip(n.LastExit, 200)), n.LastLogLines
		}
	}
	if a.Health != fleet.Healthy || a.AppliedGeneration < a.Desired.Generation || a.Desired.StorageServerVersion != v {
		return notYet, "", nil
	}
	for _, n := range a.Nodes {
		if n.Version != v || n.State != fleet.NodeRunning {
			return notYet, "", nil
		}
	}
	return healthy, "", nil
}

// lastLines is the unhealthy agent's most telling log lines.
func lastLines(a fleet.Agent) []string {
	if a.Upgrade != nil && len(a.Upgrade.LastLogLines) > 0 {
		return a.Upgrade.LastLogLines
	}
	for _, n := range a.Nodes {
		if n.State != fleet.NodeRunning && len(n.LastLogLines) > 0 {
			return n.LastLogLines
		}
	}
	return nil
}

func capLines(l []string) []string {
	if len(l) > maxLogLines {
		l = l[len(l)-maxLogLines:]
	}
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = clip(s, 512)
	}
	return out
}

// reverted reports whether agent a is back on version prev.
func reverted(a fleet.Agent, artifact, prev string) bool {
	if artifact == ArtifactAgent {
		return a.AgentVersion == prev
	}
	return a.Desired.StorageServerVersion == prev && a.AppliedGeneration >= a.Desired.Generation
}

// budgetExceeded reports whether the failures exceed the spec's budget.
func budgetExceeded(r *Rollout) bool {
	failed := r.Count(AgentFailed) - r.Tolerated
	if r.Spec.MaxFailureRatio > 0 {
		members := len(r.Members) - r.Count(AgentSkipped)
		return float64(failed) > r.Spec.MaxFailureRatio*float64(members)
	}
	return failed > r.Spec.MaxFailures
}

// Step advances rollout r at time now over the fleet view v. It returns
// the next rollout (r is not modified), the desired-version changes the
// caller must apply after persisting it, and the events of the
// transitions. It does no I/O.
func Step(now time.Time, r Rollout, v View) (Rollout, []Change, []Event) {
	r.Members = slices.Clone(r.Members)
	var evs []Event
	ev := func(typ, agentID, format string, a ...any) {
		evs = append(evs, Event{Type: typ, AgentID: agentID, Message: "rollout " + r.ID + ": " + fmt.Sprintf(format, a...)})
	}
	if r.State == Pending {
		r.State, r.Started, r.LastProgress = Running, now, now
		if r.RollingBack {
			ev(EventRollingBack, "", "rolling back %d agents", len(r.Members))
		} else {
			ev(EventStarted, "", "%s %s to %d agents (%d skipped)", r.Spec.Artifact, r.Spec.Version, len(r.Members)-r.Count(AgentSkipped), r.Count(AgentSkipped))
		}
	}
	if r.State != Running {
		return r, nil, nil // paused and the finished states hold still
	}
	changed := false
	if r.RollingBack {
		changed = stepRollback(now, &r, v, ev)
	} else {
		changed = stepForward(now, &r, v, ev)
	}
	if changed {
		r.Updated = now
	}
	return r, wanted(&r, v), evs
}

func stepForward(now time.Time, r *Rollout, v View, ev func(string, string, string, ...any)) bool {
	s := r.Spec
	changed := false
	for i := range r.Members {
		m := &r.Members[i]
		if m.State != AgentUpgrading && m.State != AgentSoaking {
			continue
		}
		a, ok := v[m.ID]
		if !ok {
			m.State, m.Reason, m.Finished, changed = AgentFailed, "agent is no longer registered", now, true
			ev(EventAgentFailed, m.ID, "%s", m.Reason)
			continue
		}
		h, why, lines := judge(a, s.Artifact, s.Version, m.Started)
		switch {
		case h == broken:
			m.State, m.Reason, m.LastLogLines, m.Finished, changed = AgentFailed, why, capLines(lines), now, true
			ev(EventAgentFailed, m.ID, "%s", why)
		case h == healthy && m.State == AgentUpgrading:
			m.State, m.SoakStart, changed = AgentSoaking, now, true
			fallthrough
		case h == healthy && m.State == AgentSoaking:
			if now.Sub(m.SoakStart) >= s.Soak {
				m.State, m.Finished, changed = AgentPassed, now, true
				r.LastProgress = now
				ev(EventAgentPassed, m.ID, "healthy on %s for %s", s.Version, s.Soak)
			}
		case m.State == AgentSoaking: // unhealthy during the soak: start over
			m.State, m.SoakStart, changed = AgentUpgrading, time.Time{}, true
		}
		if (m.State == AgentUpgrading || m.State == AgentSoaking) && now.Sub(m.Started) > s.HealthyDeadline {
			m.State, m.Finished, changed = AgentFailed, now, true
			m.Reason = fmt.Sprintf("not healthy on %s within the healthy deadline (%s)", s.Version, s.HealthyDeadline)
			m.LastLogLines = capLines(lastLines(a))
			ev(EventAgentFailed, m.ID, "%s", m.Reason)
		}
	}
	if budgetExceeded(r) {
		halt(now, r, fmt.Sprintf("%d agents failed, more than the failure budget", r.Count(AgentFailed)), ev)
		return true
	}
	if now.Sub(r.LastProgress) > s.ProgressDeadline {
		halt(now, r, fmt.Sprintf("no agent passed within the progress deadline (%s)", s.ProgressDeadline), ev)
		return true
	}
	// The current wave is the lowest with unfinished members.
	wave, inflight := -1, 0
	for i := range r.Members {
		m := &r.Members[i]
		switch m.State {
		case AgentUpgrading, AgentSoaking:
			inflight++
			if wave < 0 || m.Wave < wave {
				wave = m.Wave
			}
		case AgentPending:
			if wave < 0 || m.Wave < wave {
				wave = m.Wave
			}
		}
	}
	if wave < 0 {
		r.State, r.Finished, changed = Completed, now, true
		ev(EventCompleted, "", "%d passed, %d failed, %d skipped", r.Count(AgentPassed), r.Count(AgentFailed), r.Count(AgentSkipped))
		return true
	}
	for i := range r.Members {
		if inflight >= s.MaxParallel {
			break
		}
		m := &r.Members[i]
		if m.State != AgentPending || m.Wave != wave {
			continue
		}
		if a, ok := v[m.ID]; ok && m.Reset {
			if !reverted(a, s.Artifact, m.Previous) {
				continue
			}
			m.Reset, changed = false, true
		}
		if _, ok := v[m.ID]; !ok {
			m.State, m.Reason, m.Finished, changed = AgentSkipped, "agent is no longer registered", now, true
			continue
		}
		if wave != r.Wave || r.Count(AgentUpgrading)+r.Count(AgentSoaking)+r.Count(AgentPassed)+r.Count(AgentFailed) == 0 {
			if wave == 0 {
				ev(EventWaveStarted, "", "canary")
			} else {
				ev(EventWaveStarted, "", "wave %d of %d (%d%%)", wave, r.Waves, s.Waves[wave-1])
			}
			r.Wave = wave
		}
		m.State, m.Started, m.Changed, changed = AgentUpgrading, now, true, true
		inflight++
		ev(EventAgentStarted, m.ID, "%s %s → %s", s.Artifact, m.Previous, s.Version)
	}
	return changed
}

// halt stops a rollout whose budget or deadline is exhausted: paused, or
// rolling back with on-failure rollback. Agents not reached stay untouched.
func halt(now time.Time, r *Rollout, reason string, ev func(string, string, string, ...any)) {
	r.Reason = reason
	if r.Spec.OnFailure == OnFailureRollback {
		startRollback(r)
		ev(EventRollingBack, "", "%s; rolling back", reason)
		return
	}
	r.State = Paused
	ev(EventPaused, "", "%s", reason)
}

// startRollback turns r into its rollback: every changed agent goes back.
func startRollback(r *Rollout) {
	r.RollingBack, r.State = true, Running
	for i := range r.Members {
		m := &r.Members[i]
		if m.State == AgentPending {
			m.State, m.Reason = AgentSkipped, "not reached before the rollback"
		}
	}
}

func stepRollback(now time.Time, r *Rollout, v View, ev func(string, string, string, ...any)) bool {
	s := r.Spec
	changed, inflight, left := false, 0, 0
	for i := range r.Members {
		m := &r.Members[i]
		if !m.Changed || m.State == AgentRolledBack || m.State == AgentSkipped {
			continue
		}
		left++
		if !m.Reverting {
			continue
		}
		a, ok := v[m.ID]
		switch {
		case !ok:
			m.State, m.Reason, m.Reverting, changed = AgentRolledBack, "agent is no longer registered", false, true
		case reverted(a, s.Artifact, m.Previous):
			m.State, m.Reverting, m.Finished, changed = AgentRolledBack, false, now, true
			ev(EventAgentReverted, m.ID, "back on %s", m.Previous)
		case now.Sub(m.Started) > s.HealthyDeadline:
			m.State, m.Reverting, m.Finished, changed = AgentRolledBack, false, now, true
			m.Reason = fmt.Sprintf("set back to %s; not confirmed within %s", m.Previous, s.HealthyDeadline)
			ev(EventAgentReverted, m.ID, "%s", m.Reason)
		default:
			inflight++
			continue
		}
		left--
	}
	for i := range r.Members {
		if inflight >= s.RollbackParallel {
			break
		}
		m := &r.Members[i]
		if !m.Changed || m.Reverting || m.State == AgentRolledBack || m.State == AgentSkipped {
			continue
		}
		m.Reverting, m.Started, changed = true, now, true
		inflight++
	}
	if left == 0 {
		r.State, r.RollingBack, r.Finished, changed = RolledBack, false, now, true
		ev(EventRolledBack, "", "%d agents rolled back", r.Count(AgentRolledBack))
	}
	return changed
}

// wanted lists the desired-version changes that make the fleet match the
// rollout: level triggered, so a change lost to a crash is asked again.
func wanted(r *Rollout, v View) []Change {
	if r.State != Running {
		return nil
	}
	var out []Change
	for i := range r.Members {
		m := &r.Members[i]
		a, ok := v[m.ID]
		if !ok {
			continue
		}
		want := ""
		switch {
		case r.RollingBack && m.Reverting:
			want = m.Previous
		case !r.RollingBack && m.State == AgentPending && m.Reset:
			want = m.Previous
		case !r.RollingBack && (m.State == AgentUpgrading || m.State == AgentSoaking):
			want = r.Spec.Version
		default:
			continue
		}
		cur := a.Desired.StorageServerVersion
		if r.Spec.Artifact == ArtifactAgent {
			cur = a.Desired.AgentVersion
		}
		if want != "" && cur != want {
			out = append(out, Change{AgentID: m.ID, Artifact: r.Spec.Artifact, Version: want})
		}
	}
	return out
}
