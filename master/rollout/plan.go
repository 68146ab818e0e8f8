package rollout

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/sutragrid/sutra/internal/semver"
	"github.com/sutragrid/sutra/master/fleet"
)

// WithDefaults returns s with its zero fields set to the defaults.
func (s Spec) WithDefaults() Spec {
	if s.MaxParallel == 0 {
		s.MaxParallel = DefaultMaxParallel
	}
	if s.RollbackParallel == 0 {
		s.RollbackParallel = s.MaxParallel
	}
	if s.Soak == 0 && len(s.RollbackTo) == 0 {
		s.Soak = DefaultSoak
	}
	if s.HealthyDeadline == 0 {
		s.HealthyDeadline = DefaultHealthyDeadline
	}
	if s.ProgressDeadline == 0 {
		s.ProgressDeadline = DefaultProgressDeadline
	}
	if len(s.Waves) == 0 {
		s.Waves = []int{100}
	}
	if s.OnFailure == "" {
		s.OnFailure = OnFailurePause
	}
	return s
}

func validText(field, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%s is empty", field)
	}
	if len(s) > max || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%s: at most %d printable UTF-8 bytes", field, max)
	}
	return nil
}

// Validate reports every problem of a spec (after WithDefaults) at once;
// the error wraps ErrInvalid.
func (s Spec) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.Artifact != ArtifactStorageServer && s.Artifact != ArtifactAgent {
		add("artifact must be %s or %s", ArtifactStorageServer, ArtifactAgent)
	}
	if len(s.RollbackTo) == 0 {
		if _, err := semver.Parse(s.Version); err != nil || len(s.Version) > 64 {
			add("version %q must be an exact semantic version like 1.2.3", clip(s.Version, 64))
		}
	} else if s.Version != "" {
		add("a rollback-only rollout takes no version")
	}
	if len(s.Agents) > 0 && len(s.Selector) > 0 {
		add("give agents or a selector, not both")
	}
	if len(s.Agents) > MaxAgents {
		add("at most %d agents", MaxAgents)
	} else {
		seen := map[string]bool{}
		for _, id := range s.Agents {
			if err := validText("agent id", id, 128); err != nil {
				errs = append(errs, err)
				break
			}
			if seen[id] {
				add("agent %q named twice", id)
				break
			}
			seen[id] = true
		}
	}
	if len(s.Selector) > MaxSelector {
		add("at most %d selector labels", MaxSelector)
	} else {
		for k, v := range s.Selector {
			if err := validText("selector key", k, 63); err != nil {
				errs = append(errs, err)
			}
			if len(v) > 255 || !utf8.ValidString(v) {
				add("selector value of %q: at most 255 UTF-8 bytes", clip(k, 63))
			}
		}
	}
	if len(s.RollbackTo) > MaxAgents {
		add("at most %d agents to roll back", MaxAgents)
	} else {
		for id, v := range s.RollbackTo {
			if err := validText("agent id", id, 128); err != nil {
				errs = append(errs, err)
				break
			}
			if err := validText("rollback version", v, 64); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if s.Canary < 0 || s.Canary > MaxAgents {
		add("canary must be 0..%d", MaxAgents)
	}
	if len(s.Waves) > MaxWaves {
		add("at most %d waves", MaxWaves)
	} else {
		prev := 0
		for i, w := range s.Waves {
			if w <= prev || w > 100 {
				add("waves are increasing cumulative percentages in 1..100 (wave %d is %d)", i+1, w)
				break
			}
			prev = w
		}
		if prev != 100 && len(s.Waves) > 0 {
			add("the last wave must be 100 (%%), got %d", prev)
		}
	}
	if s.MaxParallel < 1 || s.MaxParallel > MaxAgents {
		add("max-parallel must be 1..%d", MaxAgents)
	}
	if s.RollbackParallel < 1 || s.RollbackParallel > MaxAgents {
		add("rollback-parallel must be 1..%d", MaxAgents)
	}
	if s.Soak < 0 || s.Soak > MaxDuration || s.HealthyDeadline <= 0 || s.HealthyDeadline > MaxDuration || s.ProgressDeadline <= 0 || s.ProgressDeadline > MaxDuration {
		add("durations must be in 0..%s (soak may be 0, the deadlines not)", MaxDuration)
	} else if !(s.Soak < s.HealthyDeadline && s.HealthyDeadline < s.ProgressDeadline) {
		add("need soak (%s) < healthy-deadline (%s) < progress-deadline (%s)", s.Soak, s.HealthyDeadline, s.ProgressDeadline)
	}
	if s.MaxFailures < 0 || s.MaxFailures > MaxAgents {
		add("max-failures must be 0..%d", MaxAgents)
	}
	if math.IsNaN(s.MaxFailureRatio) || s.MaxFailureRatio < 0 || s.MaxFailureRatio > 1 {
		add("max-failure-ratio must be in 0..1")
	}
	if s.MaxFailures > 0 && s.MaxFailureRatio > 0 {
		add("give max-failures or max-failure-ratio, not both")
	}
	if s.OnFailure != OnFailurePause && s.OnFailure != OnFailureRollback {
		add("on-failure must be %s or %s", OnFailurePause, OnFailureRollback)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "")
}

// orderKey is the stable position of an agent in a rollout: a retry keeps
// the order, another rollout shuffles it (cohorts by hash, like Omaha).
func orderKey(rolloutID, agentID string) [32]byte {
	return sha256.Sum256([]byte(rolloutID + "\x00" + agentID))
}

// Pinned returns the version an agent is pinned to for artifact, if any.
func Pinned(a fleet.Agent, artifact string) (string, bool) {
	v, ok := a.Pins[artifact]
	return v, ok
}

// previousVersion is where a rollback takes the agent: for the storage
// server the exact desired version, else the one version its nodes run,
// else the desired value ("latest"); for the agent its reported version.
func previousVersion(a fleet.Agent, artifact string) string {
	if artifact == ArtifactAgent {
		return a.AgentVersion
	}
	d := a.Desired.StorageServerVersion
	if _, err := semver.Parse(d); err == nil {
		return d
	}
	v := ""
	for _, n := range a.Nodes {
		if n.Version == "" || (v != "" && n.Version != v) {
			return d
		}
		v = n.Version
	}
	if v == "" {
		return d
	}
	return v
}

// Plan decides the membership of rollout id over the fleet's agents:
// targets in hash order, the canary first, then the waves; pinned agents
// are skipped. It does not validate the spec.
func Plan(id string, s Spec, agents []fleet.Agent) (members []Member, waves int, err error) {
	byID := make(map[string]fleet.Agent, len(agents))
	for _, a := range agents {
		byID[a.ID] = a
	}
	var targets []fleet.Agent
	switch {
	case len(s.RollbackTo) > 0:
		var unknown []string
		for aid := range s.RollbackTo {
			a, ok := byID[aid]
			if !ok {
				unknown = append(unknown, aid)
				continue
			}
			targets = append(targets, a)
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return nil, 0, fmt.Errorf("%w: unknown agents: %s", ErrInvalid, strings.Join(unknown, ", "))
		}
	case len(s.Agents) > 0:
		var unknown []string
		for _, aid := range s.Agents {
			a, ok := byID[aid]
			if !ok {
				unknown = append(unknown, aid)
				continue
			}
			targets = append(targets, a)
		}
		if len(unknown) > 0 {
			return nil, 0, fmt.Errorf("%w: unknown agents: %s", ErrInvalid, strings.Join(unknown, ", "))
		}
	default:
		for _, a := range agents {
			if matches(a.Labels, s.Selector) {
				targets = append(targets, a)
			}
		}
	}
	if len(targets) == 0 {
		return nil, 0, fmt.Errorf("%w: no agent matches the target set", ErrInvalid)
	}
	if len(targets) > MaxAgents {
		return nil, 0, fmt.Errorf("%w: %d agents in the target set, at most %d", ErrInvalid, len(targets), MaxAgents)
	}
	keys := make(map[string][32]byte, len(targets))
	for _, a := range targets {
		keys[a.ID] = orderKey(id, a.ID)
	}
	slices.SortFunc(targets, func(a, b fleet.Agent) int {
		ka, kb := keys[a.ID], keys[b.ID]
		return slices.Compare(ka[:], kb[:])
	})
	if len(s.RollbackTo) > 0 {
		for _, a := range targets {
			members = append(members, Member{ID: a.ID, Wave: 1, State: AgentUpgrading, Previous: s.RollbackTo[a.ID], Changed: true, Platform: a.Platform, Arch: a.Arch})
		}
		return members, 1, nil
	}
	var live []fleet.Agent
	for _, a := range targets {
		if v, ok := Pinned(a, s.Artifact); ok {
			members = append(members, Member{ID: a.ID, Wave: -1, State: AgentSkipped, Reason: "pinned to " + v, Platform: a.Platform, Arch: a.Arch})
			continue
		}
		// An agent that cannot take the change is skipped, not made the
		// canary or a wave's failure: a revoked one is refused by the master,
		// an offline one hears nothing until it is back.
		if a.Revoked {
			members = append(members, Member{ID: a.ID, Wave: -1, State: AgentSkipped, Reason: "revoked (its certificate is refused)", Platform: a.Platform, Arch: a.Arch})
			continue
		}
		if a.Health == fleet.Offline {
			members = append(members, Member{ID: a.ID, Wave: -1, State: AgentSkipped, Reason: "offline at start (set its version once it is back, or retry in a new rollout)", Platform: a.Platform, Arch: a.Arch})
			continue
		}
		live = append(live, a)
	}
	canary := min(s.Canary, len(live))
	for i, a := range live {
		m := Member{ID: a.ID, State: AgentPending, Previous: previousVersion(a, s.Artifact), Platform: a.Platform, Arch: a.Arch}
		if i >= canary {
			rest := len(live) - canary
			pos := i - canary // 0-based among the rest
			for w, pct := range s.Waves {
				// cumulative count of wave w: ceil(pct × rest / 100)
				if pos < (pct*rest+99)/100 {
					m.Wave = w + 1
					break
				}
			}
		}
		members = append(members, m)
	}
	return members, len(s.Waves), nil
}

func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
