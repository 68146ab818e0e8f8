// Package rolloutapi serves the fleet rollouts (master/rollout) on the
// master's HTTP port: GET /api/rollouts and GET /api/rollouts/{id}, as
// JSON (internal/httpapi types). It is read-only; the caller mounts it
// behind the operator token like the other fleet routes.
package rolloutapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/rollout"
)

// Routes are the paths Register handles.
var Routes = []string{"/api/rollouts", "/api/rollouts/"}

// Source is what the API reads (*rollout.Controller).
type Source interface {
	List() []rollout.Rollout
	Get(id string) (rollout.Rollout, error)
}

// Register adds the rollout routes to mux.
func Register(mux *http.ServeMux, src Source) {
	mux.HandleFunc("GET /api/rollouts", func(w http.ResponseWriter, r *http.Request) {
		all := src.List()
		out := make([]httpapi.Rollout, 0, len(all))
		for _, ro := range all {
			out = append(out, JSON(ro))
		}
		httpjson.Write(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /api/rollouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if len(id) == 0 || len(id) > 64 {
			httpjson.WriteError(w, http.StatusBadRequest, "rollout id must be 1..64 bytes")
			return
		}
		ro, err := src.Get(id)
		if errors.Is(err, rollout.ErrNotFound) {
			httpjson.WriteError(w, http.StatusNotFound, fmt.Sprintf("no rollout %q: see GET /api/rollouts", id))
			return
		}
		if err != nil {
			httpjson.WriteError(w, http.StatusInternalServerError, "internal error: see the master's log")
			return
		}
		httpjson.Write(w, http.StatusOK, JSON(ro))
	})
	for _, p := range Routes {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET")
			httpjson.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s: use GET (change rollouts with sutra rollouts)", r.Method, r.URL.Path))
		})
	}
}

// JSON converts a rollout to its HTTP form.
func JSON(ro rollout.Rollout) httpapi.Rollout {
	s := ro.Spec
	out := httpapi.Rollout{
		ID: ro.ID, Artifact: s.Artifact, Version: s.Version, State: string(ro.State), Reason: ro.Reason,
		Wave: ro.Wave, Waves: ro.Waves, RollingBack: ro.RollingBack, Canary: s.Canary, WavePercents: s.Waves,
		MaxParallel: s.MaxParallel, RollbackParallel: s.RollbackParallel, SoakSeconds: s.Soak.Seconds(),
		HealthyDeadline: s.HealthyDeadline.Seconds(), ProgressDeadline: s.ProgressDeadline.Seconds(),
		MaxFailures: s.MaxFailures, MaxFailureRatio: s.MaxFailureRatio, OnFailure: s.OnFailure, Selector: s.Selector,
		CreatedBy: ro.CreatedBy, Created: ro.Created, Started: ro.Started, Updated: ro.Updated, Finished: ro.Finished,
		Agents: make([]httpapi.RolloutAgent, 0, len(ro.Members)),
	}
	for _, m := range ro.Members {
		out.Agents = append(out.Agents, httpapi.RolloutAgent{AgentID: m.ID, Wave: m.Wave, State: string(m.State), Reason: m.Reason,
			Previous: m.Previous, Started: m.Started, Finished: m.Finished, LastLogLines: m.LastLogLines})
	}
	return out
}
