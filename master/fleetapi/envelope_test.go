package fleetapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/fleet"
)

// The paged envelopes come from internal/httpapi now; their bytes are those
// of the map the API wrote before ({key: items, "next_page_token": next},
// keys in sorted order), so no client sees a change.
func TestPagedEnvelopeBytes(t *testing.T) {
	srv, f := serve(t)
	p := fleet.Page{Size: 1}
	ag, err := f.ListAgents(p)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := f.ListNodes("", fleet.Page{Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := f.ListEvents(0, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path  string
		items any
		key   string
		next  string
	}{
		{"/api/agents?limit=1&page_token=", ag.Agents, "agents", ag.NextToken},
		{"/api/nodes?limit=5&page_token=", nd.Nodes, "nodes", nd.NextToken},
		{"/api/events?limit=1&page_token=", ev.Events, "events", ev.NextToken},
	} {
		rec := httptest.NewRecorder()
		httpjson.Write(rec, http.StatusOK, map[string]any{c.key: c.items, "next_page_token": c.next})
		code, body := get(t, srv, http.MethodGet, c.path, nil)
		if code != http.StatusOK || body != rec.Body.String() {
			t.Errorf("GET %s = %d\n%s\nwant the map form\n%s", c.path, code, body, rec.Body.String())
		}
	}
}
