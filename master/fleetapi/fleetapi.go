// Package fleetapi serves the fleet's state read-only as JSON on the master's
// HTTP port, for curl users and dashboards:
//
//	GET /api/agents               every agent
//	GET /api/agents/{id}          one agent (404 when unknown)
//	GET /api/nodes[?agent=ID]     every node record, or one agent's
//	GET /api/nodes/{id}           one node
//	GET /api/cluster              the cluster summary
//	GET /api/events[?since=N&limit=M]  events with seq > N, oldest first (limit 1-1000, default 100)
//
// Errors follow the binary API's rules: a JSON body {"error": "..."} that says
// what to do, 400 for a bad id or query, 404 for an unknown agent or node,
// 405 (with Allow) for a method other than GET or HEAD. Nothing here mutates
// state; changes go through the gRPC control plane.
package fleetapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/fleet"
)

// Event query limits.
const (
	DefaultEventLimit = 100
	MaxEventLimit     = 1000
)

// API is the HTTP view of a fleet.
type API struct {
	f *fleet.Fleet
}

// New returns the API over f.
func New(f *fleet.Fleet) *API { return &API{f: f} }

// Register adds the routes to mux. It registers only paths under
// /api/agents, /api/nodes, /api/cluster and /api/events.
func (a *API) Register(mux *http.ServeMux) {
	route := func(path string, h func(http.ResponseWriter, *http.Request) error, query ...string) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			if err := checkQuery(r.URL.Query(), query); err != nil {
				httpjson.WriteError(w, http.StatusBadRequest, err.Error())
				return
			}
			if err := h(w, r); err != nil {
				writeErr(w, err)
			}
		})
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			httpjson.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s: use GET (the fleet API is read-only; change the fleet with the sutra CLI)", r.Method, r.URL.Path))
		})
	}
	route("/api/agents", a.agents)
	route("/api/agents/{id}", a.agent)
	route("/api/nodes", a.nodes, "agent")
	route("/api/nodes/{id}", a.node)
	route("/api/cluster", a.cluster)
	route("/api/events", a.events, "since", "limit")
	for _, p := range []string{"/api/agents/{id}/{rest...}", "/api/nodes/{id}/{rest...}"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			httpjson.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such resource %s: see /api/agents, /api/nodes, /api/cluster, /api/events", r.URL.Path))
		})
	}
}

func checkQuery(q url.Values, allowed []string) error {
	for k := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			if len(allowed) == 0 {
				return fmt.Errorf("unknown query parameter %q: this endpoint takes none", k)
			}
			return fmt.Errorf("unknown query parameter %q: accepted: %s", k, strings.Join(allowed, ", "))
		}
		if len(q[k]) > 1 {
			return fmt.Errorf("query parameter %q is given %d times: give it once", k, len(q[k]))
		}
	}
	return nil
}

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fleet.ErrInvalid):
		httpjson.WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, fleet.ErrNotFound):
		httpjson.WriteError(w, http.StatusNotFound, err.Error())
	default:
		httpjson.WriteError(w, http.StatusInternalServerError, "internal error: see the master's log")
	}
}

func (a *API) agents(w http.ResponseWriter, r *http.Request) error {
	httpjson.Write(w, http.StatusOK, a.f.Agents())
	return nil
}

func (a *API) agent(w http.ResponseWriter, r *http.Request) error {
	ag, err := a.f.Agent(r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, ag)
	return nil
}

func (a *API) nodes(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Has("agent") && q.Get("agent") == "" {
		return &fleet.Error{Kind: fleet.KindInvalid, Msg: "query parameter agent is empty: give an agent id or leave it out"}
	}
	nodes, err := a.f.Nodes(q.Get("agent"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, nodes)
	return nil
}

func (a *API) node(w http.ResponseWriter, r *http.Request) error {
	n, err := a.f.Node(r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, n)
	return nil
}

func (a *API) cluster(w http.ResponseWriter, r *http.Request) error {
	httpjson.Write(w, http.StatusOK, a.f.Cluster())
	return nil
}

func (a *API) events(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var since uint64
	limit := DefaultEventLimit
	if s := q.Get("since"); q.Has("since") {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return &fleet.Error{Kind: fleet.KindInvalid, Msg: fmt.Sprintf("since=%q is not a sequence number: give a whole number >= 0", s)}
		}
		since = v
	}
	if s := q.Get("limit"); q.Has("limit") {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > MaxEventLimit {
			return &fleet.Error{Kind: fleet.KindInvalid, Msg: fmt.Sprintf("limit=%q is out of range: give a whole number from 1 to %d", s, MaxEventLimit)}
		}
		limit = v
	}
	httpjson.Write(w, http.StatusOK, a.f.Events(since, limit))
	return nil
}
