package ui

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"
)

// Rollouts is the rollout controller (master/rollout) as the dashboard
// sees it. The master's wiring adapts the controller to it, so this package
// does not depend on the controller's types.
type Rollouts interface {
	// List returns every rollout, newest first.
	List() []RolloutView
	// Get returns one rollout; an unknown id is ErrNoRollout.
	Get(id string) (RolloutView, error)
	// Act runs action (one of RolloutActions) on the rollout as the
	// operator (ctx carries the actor); a refusal (wrong state) is returned
	// as an error whose text the page shows.
	Act(ctx context.Context, id, action string) error
}

// ErrNoRollout is the error of Rollouts.Get for an unknown id.
var ErrNoRollout = errors.New("no such rollout")

// RolloutActions are the buttons of a rollout's page.
var RolloutActions = []string{"pause", "resume", "abort", "rollback"}

// RolloutView is one rollout and its progress.
type RolloutView struct {
	ID, Artifact, Version, State, Reason string
	// Wave is the current wave (0: the canary) of Waves.
	Wave, Waves      int
	RollingBack      bool
	CreatedBy        string
	Created, Updated time.Time
	Members          []RolloutMember
	// Actions are the actions the rollout's state allows.
	Actions []string
}

// RolloutMember is one agent of a rollout.
type RolloutMember struct {
	AgentID      string
	Wave         int
	State        string
	Reason       string
	Previous     string
	LastLogLines []string
}

// WaveView summarises one wave for the progress bars.
type WaveView struct {
	Wave                                   int
	Total, Passed, Failed, Active, Pending int
}

// WaveViews groups the members by wave.
func (r RolloutView) WaveViews() []WaveView {
	var out []WaveView
	for _, m := range r.Members {
		for len(out) <= m.Wave {
			out = append(out, WaveView{Wave: len(out)})
		}
		w := &out[m.Wave]
		w.Total++
		switch m.State {
		case "passed":
			w.Passed++
		case "failed", "rolled_back":
			w.Failed++
		case "pending", "skipped":
			w.Pending++
		default:
			w.Active++
		}
	}
	return out
}

// SetRollouts plugs the rollout controller in when it is made after the
// dashboard; call it before the HTTP server serves.
func (u *UI) SetRollouts(r Rollouts) { u.o.Rollouts = r }

type rolloutsData struct {
	Available bool
	List      []RolloutView
	One       *RolloutView
	Error     string
}

func (u *UI) rollouts(w http.ResponseWriter, r *http.Request) {
	d := rolloutsData{Available: u.o.Rollouts != nil}
	if d.Available {
		d.List = u.o.Rollouts.List()
	}
	u.render(w, r, http.StatusOK, "rollouts", "Rollouts", d)
}

func (u *UI) rollout(w http.ResponseWriter, r *http.Request) {
	if u.o.Rollouts == nil {
		u.errorPage(w, r, http.StatusNotFound, "This master has no rollout controller.")
		return
	}
	id := r.PathValue("id")
	ro, err := u.o.Rollouts.Get(id)
	if err != nil || len(id) > maxQueryLen {
		u.errorPage(w, r, http.StatusNotFound, "There is no such rollout.")
		return
	}
	d := rolloutsData{Available: true, One: &ro, Error: r.URL.Query().Get("error")}
	if len(d.Error) > maxQueryLen {
		d.Error = d.Error[:maxQueryLen]
	}
	u.render(w, r, http.StatusOK, "rollouts", "Rollout "+id, d)
}

// rolloutAction is POST /ui/rollouts/{id}/{action} (authed: CSRF checked).
func (u *UI) rolloutAction(w http.ResponseWriter, r *http.Request) {
	if u.o.Rollouts == nil {
		u.errorPage(w, r, http.StatusNotFound, "This master has no rollout controller.")
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	if !slices.Contains(RolloutActions, action) {
		u.errorPage(w, r, http.StatusNotFound, "Unknown rollout action.")
		return
	}
	if _, err := u.o.Rollouts.Get(id); err != nil || len(id) > maxQueryLen {
		u.errorPage(w, r, http.StatusNotFound, "There is no such rollout.")
		return
	}
	dest := Prefix + "rollouts/" + id
	if err := u.o.Rollouts.Act(r.Context(), id, action); err != nil {
		u.log.Info("ui rollout action refused", "rollout", id, "action", action, "err", err)
		u.errorPage(w, r, http.StatusConflict, "The rollout refused to "+action+": "+err.Error())
		return
	}
	u.log.Info("ui rollout action", "rollout", id, "action", action, "remote", r.RemoteAddr)
	http.Redirect(w, r, dest, http.StatusSeeOther)
}
