package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sutragrid/sutra/master/fleet"
)

// BenchmarkAgentsPage10000 renders the first page of the agents list (and
// a filtered page) of a fleet of 10,000 agents with 3 nodes each.
func BenchmarkAgentsPage10000(b *testing.B) {
	f := newFleet(b)
	const n = 10000
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < n; i += 64 {
				id := fmt.Sprintf("agent-%05d", i)
				var nodes []fleet.NodeStatus
				for j := range 3 {
					nodes = append(nodes, fleet.NodeStatus{NodeID: fmt.Sprintf("%s-n%d", id, j), State: fleet.NodeRunning, PID: int64(j + 1), Endpoint: "10.0.0.1:7100"})
				}
				if _, err := f.Register(context.Background(), fleet.Registration{AgentID: id, Hostname: "h" + id, Platform: "linux", Arch: "x86_64",
					AgentVersion: "1.0.0", MaxStorageNodes: 5, Labels: map[string]string{"zone": fmt.Sprint("z", i%10)}, Nodes: nodes}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	u, err := New(Options{Fleet: f, CheckToken: tokenCheck})
	if err != nil {
		b.Fatal(err)
	}
	ss, _ := u.sess.create()
	h := u.Handler()
	for _, path := range []string{"/ui/agents", "/ui/agents?label=zone%3Dz3&q=agent-09"} {
		b.Run(strings.TrimPrefix(path, "/ui/"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, path, nil)
				r.AddCookie(&http.Cookie{Name: CookieName, Value: ss.id})
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 || !strings.Contains(w.Body.String(), "agent-09") && !strings.Contains(w.Body.String(), "agent-00049") {
					b.Fatalf("%d", w.Code)
				}
			}
		})
	}
}

// FuzzForms posts hostile bodies, headers and cookies to the login and
// logout handlers: never a 5xx, never a session without the token, never
// the token in a cookie.
func FuzzForms(f *testing.F) {
	for _, s := range []string{"token=" + testToken, "token=" + testToken + "&next=//evil", "csrf=&token=", "%zz", "token=" + strings.Repeat("a", 5000),
		"next=%2Fui%2F..%2F..%2Fapi&token=" + testToken, "token=%00", "a=b&a=c&a=d", ""} {
		f.Add("/ui/login", s, "same", "")
		f.Add("/ui/logout", s, "same", strings.Repeat("A", 43))
		f.Add("/ui/logout", "csrf="+s, "http://evil.example", "x")
	}
	fl := newFleet(f)
	u, err := New(Options{Fleet: fl, CheckToken: tokenCheck, MaxSessions: 8})
	if err != nil {
		f.Fatal(err)
	}
	h := u.Handler()
	f.Fuzz(func(t *testing.T, path, body, origin, cookie string) {
		if !strings.HasPrefix(path, "/ui/") {
			path = "/ui/login"
		}
		r, err := http.NewRequest(http.MethodPost, "http://master.test"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin == "same" {
			origin = "http://master.test"
		}
		r.Header.Set("Origin", origin)
		r.Header.Set("Cookie", CookieName+"="+cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d", path, body, w.Code)
		}
		for _, c := range w.Result().Cookies() {
			if strings.Contains(c.Value, testToken) {
				t.Fatal("token in a cookie")
			}
			if c.Value != "" && !strings.Contains(body, testToken) {
				t.Fatalf("session without the token: %q", body)
			}
		}
		if strings.Contains(w.Body.String(), "goroutine ") {
			t.Fatal("stack trace in a page")
		}
	})
}

// FuzzPageQuery throws hostile query strings (filters, page tokens, event
// types, since) at every page: a 200 or a 4xx HTML page, never a 5xx.
func FuzzPageQuery(f *testing.F) {
	for _, s := range []string{"health=healthy", "page=QWFnZW50LTAwMDQ5", "q=x&page=VWFnZW50LTAwMDAx", "page=VQ", "page=VQA", "label==", "label=%00=1",
		"platform=" + strings.Repeat("x", 300), "type=NodeRunning", "since=18446744073709551615", "agent=../../etc", "page=" + strings.Repeat("QQ", 600), "%gg"} {
		for _, p := range []string{"agents", "nodes", "events", "agents/agent-00001", "binaries", "rollouts", ""} {
			f.Add(p, s)
		}
	}
	fl := newFleet(f)
	register(f, fl, 60, nil)
	u, err := New(Options{Fleet: fl, CheckToken: tokenCheck})
	if err != nil {
		f.Fatal(err)
	}
	ss, _ := u.sess.create()
	h := u.Handler()
	f.Fuzz(func(t *testing.T, page, query string) {
		if strings.Contains(page, "stream") {
			return // a live stream does not end by itself
		}
		r, err := http.NewRequest(http.MethodGet, "http://master.test/ui/"+page+"?"+query, nil)
		if err != nil {
			return
		}
		r.AddCookie(&http.Cookie{Name: CookieName, Value: ss.id})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 || (w.Code != 200 && w.Code != 301 && w.Code != 307 && w.Code != 308 && (w.Code < 400 || w.Code > 404)) {
			t.Fatalf("%s?%s: %d", page, query, w.Code)
		}
	})
}
