// Package rollout drives a fleet rollout: it moves the desired version of an
// artifact (storage-server or sutra-agent) across a set of agents, canary
// first and then in waves by cumulative percentage over a stable order,
// gated on each agent's real health, and halts by itself (pause or
// rollback) when more agents fail than the rollout's failure budget allows.
//
// Step is the whole policy, a pure function: (now, rollout, fleet view) →
// (next rollout, desired-version changes, events); it does no I/O. The
// Controller runs Step on a ticker, persists every rollout in the store's
// rollouts table with a compare-and-swap on the revision it read, and only
// then applies the desired-version changes Step asks for. Changes are level
// triggered (Step asks again for every agent whose desired version is not
// what the rollout wants), so a master killed between the two writes
// re-applies them after its restart and the rollout resumes where it was.
package rollout

import (
	"errors"
	"time"
)

// State is a rollout's state.
type State string

// Rollout states. Pending, running and paused are active: one active
// rollout per artifact at a time.
const (
	Pending    State = "pending"
	Running    State = "running"
	Paused     State = "paused"
	Completed  State = "completed"
	Aborted    State = "aborted"
	RolledBack State = "rolled_back"
)

// Active reports whether s is pending, running or paused.
func (s State) Active() bool { return s == Pending || s == Running || s == Paused }

// AgentState is one member agent's state in a rollout.
type AgentState string

// Agent states.
const (
	AgentPending    AgentState = "pending"
	AgentUpgrading  AgentState = "upgrading"
	AgentSoaking    AgentState = "soaking"
	AgentPassed     AgentState = "passed"
	AgentFailed     AgentState = "failed"
	AgentRolledBack AgentState = "rolled_back"
	AgentSkipped    AgentState = "skipped"
)

// Artifacts a rollout can move.
const (
	ArtifactStorageServer = "storage-server"
	ArtifactAgent         = "sutra-agent"
)

// On-failure policies.
const (
	OnFailurePause    = "pause"
	OnFailureRollback = "rollback"
)

// Event types of the fleet event log.
const (
	EventStarted       = "RolloutStarted"
	EventWaveStarted   = "RolloutWaveStarted"
	EventAgentStarted  = "RolloutAgentStarted"
	EventAgentPassed   = "RolloutAgentPassed"
	EventAgentFailed   = "RolloutAgentFailed"
	EventPaused        = "RolloutPaused"
	EventResumed       = "RolloutResumed"
	EventAborted       = "RolloutAborted"
	EventRollingBack   = "RolloutRollingBack"
	EventRolledBack    = "RolloutRolledBack"
	EventCompleted     = "RolloutCompleted"
	EventRetried       = "RolloutRetried"
	EventAgentReverted = "RolloutAgentRolledBack"
)

// Limits of a spec.
const (
	MaxAgents      = 10000
	MaxWaves       = 20
	MaxSelector    = 16
	MaxDuration    = 7 * 24 * time.Hour
	MinSoak        = 0
	maxLogLines    = 20
	maxReasonBytes = 512
)

// Defaults of a spec's zero fields.
const (
	DefaultMaxParallel      = 1
	DefaultSoak             = 60 * time.Second
	DefaultHealthyDeadline  = 5 * time.Minute
	DefaultProgressDeadline = 30 * time.Minute
)

// Errors callers act on (test with errors.Is).
var (
	ErrInvalid  = errors.New("invalid rollout")
	ErrNotFound = errors.New("rollout not found")
	// ErrPrecondition: the rollout (or another one) is in a state that
	// does not allow the action.
	ErrPrecondition = errors.New("rollout precondition failed")
)

// Spec is what an operator asks for.
type Spec struct {
	Artifact string `json:"artifact"`
	Version  string `json:"version"`
	// Agents, when set, is the target set; else Selector (agent labels,
	// all must match); else every agent.
	Agents   []string          `json:"agents,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	// Canary agents go first, alone.
	Canary int `json:"canary,omitempty"`
	// Waves are cumulative percentages of the agents after the canary,
	// increasing, the last 100 (empty: one wave of 100).
	Waves            []int         `json:"waves,omitempty"`
	MaxParallel      int           `json:"max_parallel"`
	RollbackParallel int           `json:"rollback_parallel"`
	Soak             time.Duration `json:"soak"`
	HealthyDeadline  time.Duration `json:"healthy_deadline"`
	ProgressDeadline time.Duration `json:"progress_deadline"`
	// MaxFailures: the rollout halts when more agents than this fail
	// (0: the first failure halts). MaxFailureRatio, when > 0, is used
	// instead: more than ratio × members.
	MaxFailures     int     `json:"max_failures,omitempty"`
	MaxFailureRatio float64 `json:"max_failure_ratio,omitempty"`
	OnFailure       string  `json:"on_failure"`
	// RollbackTo makes a rollback-only rollout: each named agent goes
	// back to the given version, RollbackParallel at a time, without
	// canary or soak (sutra binaries yank --rollback).
	RollbackTo map[string]string `json:"rollback_to,omitempty"`
}

// Member is one agent of a rollout.
type Member struct {
	ID string `json:"id"`
	// Wave is 0 for the canary, 1.. for the waves.
	Wave   int        `json:"wave"`
	State  AgentState `json:"state"`
	Reason string     `json:"reason,omitempty"`
	// Previous is the version the agent had at start (where a rollback
	// takes it); Changed is set once the rollout changed its desired
	// version.
	Previous  string `json:"previous,omitempty"`
	Changed   bool   `json:"changed,omitempty"`
	Reverting bool   `json:"reverting,omitempty"`
	// Reset: a retried member that failed goes back to Previous first, so
	// its agent (which does not retry a version it rolled back) sees a
	// new desired version when the retry reaches it.
	Reset        bool      `json:"reset,omitempty"`
	Started      time.Time `json:"started,omitzero"`
	SoakStart    time.Time `json:"soak_start,omitzero"`
	Finished     time.Time `json:"finished,omitzero"`
	LastLogLines []string  `json:"last_log_lines,omitempty"`
	Platform     string    `json:"platform,omitempty"`
	Arch         string    `json:"arch,omitempty"`
}

// Rollout is a rollout and its progress.
type Rollout struct {
	ID      string   `json:"id"`
	Spec    Spec     `json:"spec"`
	State   State    `json:"state"`
	Reason  string   `json:"reason,omitempty"`
	Wave    int      `json:"wave"`
	Waves   int      `json:"waves"`
	Members []Member `json:"members"`
	// RollingBack: the rollout is taking changed agents back.
	RollingBack bool `json:"rolling_back,omitempty"`
	// Tolerated failures (accepted by a resume) do not count against the budget.
	Tolerated    int       `json:"tolerated,omitempty"`
	CreatedBy    string    `json:"created_by,omitempty"`
	Created      time.Time `json:"created"`
	Started      time.Time `json:"started,omitzero"`
	Updated      time.Time `json:"updated"`
	LastProgress time.Time `json:"last_progress,omitzero"`
	Finished     time.Time `json:"finished,omitzero"`
}

// Count returns how many members are in state s.
func (r *Rollout) Count(s AgentState) int {
	n := 0
	for i := range r.Members {
		if r.Members[i].State == s {
			n++
		}
	}
	return n
}

// Change is a desired-version change Step asks for.
type Change struct {
	AgentID  string
	Artifact string
	Version  string
}

// Event is a transition Step reports, for the fleet event log.
type Event struct {
	Type    string
	AgentID string
	Message string
}
