package ui

import (
	"context"
	"errors"
	"fmt"

	"github.com/sutragrid/sutra/master/rollout"
)

// ControllerRollouts adapts master/rollout's Controller to Rollouts.
func ControllerRollouts(c *rollout.Controller) Rollouts { return controllerRollouts{c} }

type controllerRollouts struct{ c *rollout.Controller }

func (a controllerRollouts) List() []RolloutView {
	list := a.c.List()
	out := make([]RolloutView, len(list))
	for i, r := range list {
		out[i] = viewOf(r)
	}
	return out
}

func (a controllerRollouts) Get(id string) (RolloutView, error) {
	r, err := a.c.Get(id)
	if errors.Is(err, rollout.ErrNotFound) {
		return RolloutView{}, ErrNoRollout
	}
	if err != nil {
		return RolloutView{}, err
	}
	return viewOf(r), nil
}

func (a controllerRollouts) Act(ctx context.Context, id, action string) error {
	var err error
	switch action {
	case "pause":
		_, err = a.c.Pause(ctx, id)
	case "resume":
		_, err = a.c.Resume(ctx, id)
	case "abort":
		_, err = a.c.Abort(ctx, id)
	case "rollback":
		_, err = a.c.Rollback(ctx, id)
	default:
		return fmt.Errorf("unknown action %q", action)
	}
	return err
}

func viewOf(r rollout.Rollout) RolloutView {
	v := RolloutView{ID: r.ID, Artifact: r.Spec.Artifact, Version: r.Spec.Version, State: string(r.State), Reason: r.Reason,
		Wave: r.Wave, Waves: r.Waves, RollingBack: r.RollingBack, CreatedBy: r.CreatedBy, Created: r.Created, Updated: r.Updated}
	for _, m := range r.Members {
		v.Members = append(v.Members, RolloutMember{AgentID: m.ID, Wave: m.Wave, State: string(m.State), Reason: m.Reason,
			Previous: m.Previous, LastLogLines: m.LastLogLines})
	}
	switch r.State {
	case rollout.Pending, rollout.Running:
		v.Actions = []string{"pause", "abort", "rollback"}
	case rollout.Paused:
		v.Actions = []string{"resume", "abort", "rollback"}
	}
	return v
}
