package httpapi

import "time"

// Rollout is a fleet rollout as GET /api/rollouts and /api/rollouts/{id}
// return it (master/rollout).
type Rollout struct {
	ID               string            `json:"id"`
	Artifact         string            `json:"artifact"`
	Version          string            `json:"version,omitempty"`
	State            string            `json:"state"`
	Reason           string            `json:"reason,omitempty"`
	Wave             int               `json:"wave"`
	Waves            int               `json:"waves"`
	RollingBack      bool              `json:"rolling_back,omitempty"`
	Canary           int               `json:"canary"`
	WavePercents     []int             `json:"wave_percents"`
	MaxParallel      int               `json:"max_parallel"`
	RollbackParallel int               `json:"rollback_parallel"`
	SoakSeconds      float64           `json:"soak_seconds"`
	HealthyDeadline  float64           `json:"healthy_deadline_seconds"`
	ProgressDeadline float64           `json:"progress_deadline_seconds"`
	MaxFailures      int               `json:"max_failures"`
	MaxFailureRatio  float64           `json:"max_failure_ratio,omitempty"`
	OnFailure        string            `json:"on_failure"`
	Selector         map[string]string `json:"selector,omitempty"`
	CreatedBy        string            `json:"created_by,omitempty"`
	Created          time.Time         `json:"created"`
	Started          time.Time         `json:"started,omitzero"`
	Updated          time.Time         `json:"updated"`
	Finished         time.Time         `json:"finished,omitzero"`
	Agents           []RolloutAgent    `json:"agents"`
}

// RolloutAgent is one member agent of a rollout.
type RolloutAgent struct {
	AgentID      string    `json:"agent_id"`
	Wave         int       `json:"wave"`
	State        string    `json:"state"`
	Reason       string    `json:"reason,omitempty"`
	Previous     string    `json:"previous_version,omitempty"`
	Started      time.Time `json:"started,omitzero"`
	Finished     time.Time `json:"finished,omitzero"`
	LastLogLines []string  `json:"last_log_lines,omitempty"`
}
