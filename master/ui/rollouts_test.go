package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sutragrid/sutra/master/actor"
)

// memRollouts is a small state machine standing in for master/rollout's
// controller, which the master's wiring adapts to Rollouts.
type memRollouts struct {
	mu    sync.Mutex
	r     RolloutView
	calls []string
}

func (m *memRollouts) List() []RolloutView {
	m.mu.Lock()
	defer m.mu.Unlock()
	return []RolloutView{m.r}
}

func (m *memRollouts) Get(id string) (RolloutView, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id != m.r.ID {
		return RolloutView{}, ErrNoRollout
	}
	return m.r, nil
}

func (m *memRollouts) Act(ctx context.Context, id, action string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, action)
	if a := actor.From(ctx); !strings.HasPrefix(a, "operator@127.0.0.1") {
		return fmt.Errorf("actor %q", a)
	}
	switch {
	case action == "pause" && m.r.State == "running":
		m.r.State, m.r.Actions = "paused", []string{"resume", "abort", "rollback"}
	case action == "resume" && m.r.State == "paused":
		m.r.State, m.r.Actions = "running", []string{"pause", "abort", "rollback"}
	default:
		return fmt.Errorf("cannot %s a %s rollout", action, m.r.State)
	}
	return nil
}

func TestRolloutPageActions(t *testing.T) {
	f := newFleet(t)
	ro := &memRollouts{r: RolloutView{ID: "r1", Artifact: "storage-server", Version: "1.5.0", State: "running", Wave: 1, Waves: 2,
		Actions: []string{"pause", "abort", "rollback"},
		Members: []RolloutMember{{AgentID: "a1", Wave: 0, State: "passed"}, {AgentID: "a2", Wave: 1, State: "failed", Reason: "node crashed", LastLogLines: []string{"panic: <b>boom</b>"}}, {AgentID: "a3", Wave: 1, State: "soaking"}}}}
	u, err := New(Options{Fleet: f, CheckToken: tokenCheck, Rollouts: ro})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, u.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	e := &env{f: f, u: u, srv: srv}
	c, csrf := e.login(t)

	_, body := e.get(t, "/ui/rollouts", c)
	if !strings.Contains(body, `href="/ui/rollouts/r1"`) {
		t.Fatalf("list:\n%s", body)
	}
	_, body = e.get(t, "/ui/rollouts/r1", c)
	for _, want := range []string{`id="action-pause"`, "node crashed", "panic: &lt;b&gt;boom&lt;/b&gt;", `id="rollout-state">running`, "canary"} {
		if !strings.Contains(body, want) {
			t.Fatalf("rollout page lacks %q:\n%s", want, body)
		}
	}
	if r := e.post(t, "/ui/rollouts/r1/pause", url.Values{}, c, srv.URL); r.StatusCode != http.StatusForbidden || len(ro.calls) != 0 {
		t.Fatalf("pause without CSRF: %d, calls %v", r.StatusCode, ro.calls)
	}
	if r := e.post(t, "/ui/rollouts/r1/pause", url.Values{"csrf": {csrf}}, c, srv.URL); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/rollouts/r1" {
		t.Fatalf("pause: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if _, body = e.get(t, "/ui/rollouts/r1", c); !strings.Contains(body, `id="rollout-state">paused`) || !strings.Contains(body, `id="action-resume"`) {
		t.Fatalf("after pause:\n%s", body)
	}
	if r := e.post(t, "/ui/rollouts/r1/pause", url.Values{"csrf": {csrf}}, c, srv.URL); r.StatusCode != http.StatusConflict {
		t.Fatalf("pause a paused rollout: %d", r.StatusCode)
	}
	if r := e.post(t, "/ui/rollouts/r1/resume", url.Values{"csrf": {csrf}}, c, srv.URL); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("resume: %d", r.StatusCode)
	}
	for path, want := range map[string]int{"/ui/rollouts/r1/explode": 404, "/ui/rollouts/nope/pause": 404} {
		if r := e.post(t, path, url.Values{"csrf": {csrf}}, c, srv.URL); r.StatusCode != want {
			t.Fatalf("%s: %d", path, r.StatusCode)
		}
	}
	if got := strings.Join(ro.calls, ","); got != "pause,pause,resume" {
		t.Fatalf("controller calls %s", got)
	}
}
