package ui

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/rollout"
	"github.com/sutragrid/sutra/master/store"
)

// The rollouts pages over the real rollout controller (master/rollout on a
// real bbolt store and fleet): a rollout started for three agents is
// listed, shown wave by wave, paused and resumed from its page (CSRF
// checked), the controller's state changes each time, and its events name
// the operator who pressed the button.
func TestRolloutPagesOverTheController(t *testing.T) {
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	f, err := fleet.New(ctx, fleet.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	register(t, f, 3, nil)
	c, err := rollout.New(ctx, rollout.Options{Store: st, Fleet: f})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Start(ctx, rollout.Spec{Artifact: rollout.ArtifactStorageServer, Version: "1.5.0", Canary: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.Tick(ctx)
	u, err := New(Options{Fleet: f, CheckToken: tokenCheck, Rollouts: ControllerRollouts(c)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, u.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	e := &env{f: f, u: u, srv: srv}
	cookie, csrf := e.login(t)

	if _, body := e.get(t, "/ui/rollouts", cookie); !strings.Contains(body, `href="/ui/rollouts/`+r.ID+`"`) || !strings.Contains(body, "1.5.0") {
		t.Fatalf("list:\n%s", body)
	}
	page := "/ui/rollouts/" + r.ID
	if _, body := e.get(t, page, cookie); !strings.Contains(body, `id="action-pause"`) || !strings.Contains(body, "agent-00000") || !strings.Contains(body, "canary") {
		t.Fatalf("rollout page:\n%s", body)
	}
	state := func() rollout.State {
		got, err := c.Get(r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.State
	}
	if resp := e.post(t, page+"/pause", url.Values{}, cookie, srv.URL); resp.StatusCode != http.StatusForbidden || state() == rollout.Paused {
		t.Fatalf("pause without CSRF: %d, state %s", resp.StatusCode, state())
	}
	if resp := e.post(t, page+"/pause", url.Values{"csrf": {csrf}}, cookie, srv.URL); resp.StatusCode != http.StatusSeeOther || state() != rollout.Paused {
		t.Fatalf("pause: %d, state %s", resp.StatusCode, state())
	}
	if _, body := e.get(t, page, cookie); !strings.Contains(body, `id="rollout-state">paused`) || !strings.Contains(body, `id="action-resume"`) || !strings.Contains(body, "paused by operator@127.0.0.1") {
		t.Fatalf("paused page:\n%s", body)
	}
	if resp := e.post(t, page+"/pause", url.Values{"csrf": {csrf}}, cookie, srv.URL); resp.StatusCode != http.StatusConflict {
		t.Fatalf("pause again: %d", resp.StatusCode)
	}
	if resp := e.post(t, page+"/resume", url.Values{"csrf": {csrf}}, cookie, srv.URL); resp.StatusCode != http.StatusSeeOther || !state().Active() || state() == rollout.Paused {
		t.Fatalf("resume: %d, state %s", resp.StatusCode, state())
	}
	var paused, resumed bool
	for _, ev := range f.Events(0, 0) {
		switch ev.Type {
		case rollout.EventPaused:
			paused = strings.HasPrefix(ev.Actor, "operator@127.0.0.1") || strings.Contains(ev.Message, "operator@127.0.0.1")
		case rollout.EventResumed:
			resumed = true
		}
	}
	if !paused || !resumed {
		t.Fatalf("events: paused by the operator %v, resumed %v: %+v", paused, resumed, f.Events(0, 0))
	}
	if resp, _ := e.get(t, "/ui/rollouts/no-such", cookie); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown rollout: %d", resp.StatusCode)
	}
}
