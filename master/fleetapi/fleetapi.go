// Package fleetapi serves the fleet's state read-only as JSON on the master's
// HTTP port, for curl users and dashboards:
//
//	GET /api/agents               agents, sorted by id
//	GET /api/agents/{id}          one agent (404 when unknown)
//	GET /api/nodes[?agent=ID]     node records, or one agent's, sorted by agent and node id
//	GET /api/nodes/{id}           one node
//	GET /api/cluster              the cluster summary
//	GET /api/events[?since=N]     events with seq > N, oldest first
//
// The three lists are paginated: ?limit=M (1-1000, default 100) and
// ?page_token=T. Without page_token the answer is the first page as a JSON
// array (the shape older clients know); with page_token (empty for the
// first page) it is an object {"agents"|"nodes"|"events": [...],
// "next_page_token": "..."} (the envelopes of internal/httpapi, the HTTP
// contract). Either way a Next-Page-Token header carries
// the token of the next page when there is one. A page also stays under
// fleet.MaxPageBytes, so it may hold fewer items than the limit.
//
// Errors follow the binary API's rules: a JSON body {"error": "..."} that says
// what to do, 400 for a bad id or query, 404 for an unknown agent or node,
// 405 (with Allow) for a method other than GET or HEAD. Nothing here mutates
// state; changes go through the gRPC control plane.
package fleetapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
)

// List limits (?limit=): the fleet's page sizes.
const (
	DefaultEventLimit = fleet.DefaultPageSize
	MaxEventLimit     = fleet.MaxPageSize
)

// API is the HTTP view of a fleet.
type API struct {
	f             *fleet.Fleet
	clusterStatus func(ctx context.Context) cluster.Status
}

// WithClusterStatus makes /api/cluster report the control plane's masters,
// the leader and the store's health beside the fleet summary.
func (a *API) WithClusterStatus(fn func(ctx context.Context) cluster.Status) *API {
	a.clusterStatus = fn
	return a
}

// clusterView is /api/cluster: the fleet summary and, with several
// masters in mind, the masters and the store.
type clusterView struct {
	fleet.ClusterStatus
	Masters []cluster.Member `json:"masters,omitempty"`
	Leader  string           `json:"leader,omitempty"`
	Store   *store.Health    `json:"store,omitempty"`
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
	route("/api/agents", a.agents, "limit", "page_token")
	route("/api/agents/{id}", a.agent)
	route("/api/nodes", a.nodes, "agent", "limit", "page_token")
	route("/api/nodes/{id}", a.node)
	route("/api/cluster", a.cluster)
	route("/api/events", a.events, "since", "limit", "page_token")
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

// page reads ?limit and ?page_token; paged reports whether page_token was
// given (the answer is then an object with next_page_token).
func page(q url.Values) (p fleet.Page, paged bool, err error) {
	p.Size = DefaultEventLimit
	if s := q.Get("limit"); q.Has("limit") {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > MaxEventLimit {
			return p, false, &fleet.Error{Kind: fleet.KindInvalid, Msg: fmt.Sprintf("limit=%q is out of range: give a whole number from 1 to %d", s, MaxEventLimit)}
		}
		p.Size = v
	}
	p.Token = q.Get("page_token")
	return p, q.Has("page_token"), nil
}

// writePage writes items as a bare array, or (paged) as the contract's
// envelope (internal/httpapi), with the Next-Page-Token header when next is
// set.
func writePage(w http.ResponseWriter, paged bool, items, envelope any, next string) {
	if next != "" {
		w.Header().Set(httpapi.NextPageTokenHeader, next)
	}
	if !paged {
		httpjson.Write(w, http.StatusOK, items)
		return
	}
	httpjson.Write(w, http.StatusOK, envelope)
}

func (a *API) agents(w http.ResponseWriter, r *http.Request) error {
	p, paged, err := page(r.URL.Query())
	if err != nil {
		return err
	}
	pg, err := a.f.ListAgents(p)
	if err != nil {
		return err
	}
	writePage(w, paged, pg.Agents, httpapi.AgentsPage[fleet.Agent]{Agents: pg.Agents, NextPageToken: pg.NextToken}, pg.NextToken)
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
	p, paged, err := page(q)
	if err != nil {
		return err
	}
	pg, err := a.f.ListNodes(q.Get("agent"), p)
	if err != nil {
		return err
	}
	writePage(w, paged, pg.Nodes, httpapi.NodesPage[fleet.Node]{Nodes: pg.Nodes, NextPageToken: pg.NextToken}, pg.NextToken)
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
	v := clusterView{ClusterStatus: a.f.Cluster()}
	if a.clusterStatus != nil {
		cs := a.clusterStatus(r.Context())
		v.Masters, v.Leader, v.Store = cs.Masters, cs.Leader, &cs.Store
	}
	httpjson.Write(w, http.StatusOK, v)
	return nil
}

func (a *API) events(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var since uint64
	if q.Has("since") && q.Has("page_token") && q.Get("page_token") != "" {
		return &fleet.Error{Kind: fleet.KindInvalid, Msg: "since and page_token are both given: give since for the first page, then only page_token"}
	}
	if s := q.Get("since"); q.Has("since") {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return &fleet.Error{Kind: fleet.KindInvalid, Msg: fmt.Sprintf("since=%q is not a sequence number: give a whole number >= 0", s)}
		}
		since = v
	}
	p, paged, err := page(q)
	if err != nil {
		return err
	}
	pg, err := a.f.ListEvents(since, p)
	if err != nil {
		return err
	}
	writePage(w, paged, pg.Events, httpapi.EventsPage[fleet.Event]{Events: pg.Events, NextPageToken: pg.NextToken}, pg.NextToken)
	return nil
}
