package master

import (
	"github.com/sutragrid/sutra/master/metrics"
	"github.com/sutragrid/sutra/master/rollout"
)

// Every rollout and member state, exported at zero when none is in it, so
// that alert rules and dashboards always find the series.
var (
	rolloutStates      = []rollout.State{rollout.Pending, rollout.Running, rollout.Paused, rollout.Completed, rollout.Aborted, rollout.RolledBack}
	rolloutAgentStates = []rollout.AgentState{rollout.AgentPending, rollout.AgentUpgrading, rollout.AgentSoaking, rollout.AgentPassed, rollout.AgentFailed, rollout.AgentRolledBack, rollout.AgentSkipped}
)

// rolloutCounts reads the rollout controller for master/metrics at scrape
// time: rollouts by state, and the members of active rollouts by state.
func rolloutCounts(c *rollout.Controller) metrics.RolloutSource {
	return metrics.RolloutCountsFunc(func() (map[string]int, map[string]int) {
		byState, agents := map[string]int{}, map[string]int{}
		for _, s := range rolloutStates {
			byState[string(s)] = 0
		}
		for _, s := range rolloutAgentStates {
			agents[string(s)] = 0
		}
		for _, r := range c.List() {
			byState[string(r.State)]++
			if !r.State.Active() {
				continue
			}
			for _, m := range r.Members {
				agents[string(m.State)]++
			}
		}
		return byState, agents
	})
}
