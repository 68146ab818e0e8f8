package ui

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/store"
)

const testToken = "operator-token-0123456789abcdef"

// tokenCheck stands in for master/auth in this package's tests; the master
// wiring (OperatorCheck around auth.Policy.RequireOperator) is tested by
// TestOperatorCheck and the browser test.
func tokenCheck(tok string) bool { return tok == testToken }

type env struct {
	f   *fleet.Fleet
	u   *UI
	srv *httptest.Server
}

func newFleet(tb testing.TB) *fleet.Fleet {
	st, err := store.OpenDir(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	f, err := fleet.New(context.Background(), fleet.Options{Store: st, MasterVersion: "0.9.0"})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func register(tb testing.TB, f *fleet.Fleet, n int, label func(i int) map[string]string) {
	for i := range n {
		id := fmt.Sprintf("agent-%05d", i)
		r := fleet.Registration{AgentID: id, Hostname: fmt.Sprintf("host%d.example", i), Platform: "linux", Arch: "x86_64",
			AgentVersion: "1.0.0", MaxStorageNodes: 4, Nodes: []fleet.NodeStatus{{NodeID: id + "-n0", State: fleet.NodeRunning, PID: 10, RestartCount: uint32(i % 3)}}}
		if i%2 == 1 {
			r.Platform = "darwin"
			r.Arch = "aarch64"
		}
		if label != nil {
			r.Labels = label(i)
		}
		if _, err := f.Register(context.Background(), r); err != nil {
			tb.Fatal(err)
		}
	}
}

func newEnv(t *testing.T, agents int) *env {
	t.Helper()
	f := newFleet(t)
	register(t, f, agents, func(i int) map[string]string { return map[string]string{"zone": fmt.Sprint("z", i%4)} })
	u, err := New(Options{Fleet: f, CheckToken: tokenCheck, MaxSessions: 4})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, u.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{f: f, u: u, srv: srv}
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *env) post(t *testing.T, path string, form url.Values, cookie *http.Cookie, origin string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (e *env) get(t *testing.T, path string, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login logs in and returns the session cookie and the CSRF token.
func (e *env) login(t *testing.T) (*http.Cookie, string) {
	t.Helper()
	resp := e.post(t, "/ui/login", url.Values{"token": {testToken}}, nil, e.srv.URL)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == CookieName {
			c = k
		}
	}
	if c == nil {
		t.Fatal("no session cookie")
	}
	_, body := e.get(t, "/ui/", c)
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no CSRF token on the overview")
	}
	return c, m[1]
}

func TestLoginAndSessionCookie(t *testing.T) {
	e := newEnv(t, 3)
	// No cookie: redirected to the login page, remembering where to go.
	resp, _ := e.get(t, "/ui/agents?health=healthy", nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login?next=%2Fui%2Fagents") {
		t.Fatalf("no cookie: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Wrong token, and the right token cross-origin or with no origin at all.
	if r := e.post(t, "/ui/login", url.Values{"token": {"wrong-token-wrong-token"}}, nil, e.srv.URL); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Fatalf("wrong token: %d %v", r.StatusCode, r.Cookies())
	}
	for _, origin := range []string{"", "http://evil.example", "null"} {
		if r := e.post(t, "/ui/login", url.Values{"token": {testToken}}, nil, origin); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
			t.Fatalf("origin %q: %d", origin, r.StatusCode)
		}
	}
	// An open redirect through next is refused.
	for _, next := range []string{"https://evil.example/", "//evil.example/ui/", "/ui//evil.example", "/api/agents"} {
		r := e.post(t, "/ui/login", url.Values{"token": {testToken}, "next": {next}}, nil, e.srv.URL)
		if r.Header.Get("Location") != "/ui/" {
			t.Fatalf("next %q: Location %q", next, r.Header.Get("Location"))
		}
	}
	// Login: a random session id, never the token, HttpOnly, SameSite=Strict, Path=/ui/.
	r := e.post(t, "/ui/login", url.Values{"token": {testToken}, "next": {"/ui/agents"}}, nil, e.srv.URL)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/agents" {
		t.Fatalf("login: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	c := r.Cookies()[0]
	if c.Name != CookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Secure ||
		strings.Contains(c.Value, testToken) || len(c.Value) != 43 {
		t.Fatalf("cookie %+v", c)
	}
	raw := r.Header.Get("Set-Cookie")
	if !strings.Contains(raw, "HttpOnly") || !strings.Contains(raw, "SameSite=Strict") {
		t.Fatalf("Set-Cookie %q", raw)
	}
	resp, body := e.get(t, "/ui/agents", c)
	if resp.StatusCode != 200 || !strings.Contains(body, "agent-00002") || !strings.Contains(body, "host1.example") {
		t.Fatalf("agents page: %d\n%s", resp.StatusCode, body)
	}
	h := resp.Header
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" {
		t.Fatalf("security headers %v", h)
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") {
		t.Fatal("inline script in a page")
	}
	// A forged or stale cookie is no session.
	resp, _ = e.get(t, "/ui/", &http.Cookie{Name: CookieName, Value: strings.Repeat("A", 43)})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("forged cookie: %d", resp.StatusCode)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, 1)
	c, csrf := e.login(t)
	cases := []struct {
		name   string
		form   url.Values
		origin string
		cookie *http.Cookie
		want   int
	}{
		{"no token", url.Values{}, e.srv.URL, c, http.StatusForbidden},
		{"wrong token", url.Values{"csrf": {csrf[:42] + "x"}}, e.srv.URL, c, http.StatusForbidden},
		{"cross origin", url.Values{"csrf": {csrf}}, "http://evil.example", c, http.StatusForbidden},
		{"no origin", url.Values{"csrf": {csrf}}, "", c, http.StatusForbidden},
		{"no cookie", url.Values{"csrf": {csrf}}, e.srv.URL, nil, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		if r := e.post(t, "/ui/logout", tc.form, tc.cookie, tc.origin); r.StatusCode != tc.want {
			t.Fatalf("%s: %d, want %d", tc.name, r.StatusCode, tc.want)
		}
	}
	// Still logged in after all the refused attempts.
	if resp, _ := e.get(t, "/ui/", c); resp.StatusCode != 200 {
		t.Fatalf("session lost: %d", resp.StatusCode)
	}
	// Referer instead of Origin is accepted when same-origin.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/ui/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", e.srv.URL+"/ui/agents")
	req.AddCookie(c)
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := e.get(t, "/ui/", c); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestErrorPages(t *testing.T) {
	e := newEnv(t, 1)
	c, _ := e.login(t)
	for path, want := range map[string]int{
		"/ui/nope":                     404,
		"/ui/agents/no-such-agent":     404,
		"/ui/agents?health=purple":     400,
		"/ui/agents?page=garbage!!":    400,
		"/ui/agents?q=x&page=QUJD":     400,
		"/ui/nodes?page=Zm9v":          400,
		"/ui/events?type=%3Cscript%3E": 400,
		"/ui/events/stream?since=abc":  400,
	} {
		resp, body := e.get(t, path, c)
		if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(body, "<!doctype html>") || strings.Contains(body, "goroutine") || strings.Contains(body, "<script>") {
			t.Fatalf("%s: %d %q\n%s", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

func TestAgentsPagingAndFilters(t *testing.T) {
	e := newEnv(t, 2*PageSize+7)
	c, _ := e.login(t)
	rowRE := regexp.MustCompile(`<tr><td><a href="/ui/agents/(agent-\d+)">`)
	nextRE := regexp.MustCompile(`rel="next" href="([^"]+)"`)
	walk := func(start string) []string {
		var ids []string
		path := start
		for range 20 {
			resp, body := e.get(t, path, c)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d", path, resp.StatusCode)
			}
			for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
				ids = append(ids, m[1])
			}
			m := nextRE.FindStringSubmatch(body)
			if m == nil {
				return ids
			}
			path = strings.ReplaceAll(m[1], "&amp;", "&")
		}
		t.Fatal("paging does not end")
		return nil
	}
	all := walk("/ui/agents")
	if len(all) != 2*PageSize+7 {
		t.Fatalf("paged through %d agents", len(all))
	}
	seen := map[string]bool{}
	for _, id := range all {
		if seen[id] {
			t.Fatalf("%s twice", id)
		}
		seen[id] = true
	}
	if got := walk("/ui/agents?platform=darwin"); len(got) != PageSize+3 {
		t.Fatalf("darwin: %d", len(got))
	}
	if got := walk("/ui/agents?label=zone%3Dz1&platform=darwin%2Faarch64"); len(got) != 27 {
		t.Fatalf("zone z1 darwin: %d", len(got))
	}
	if got := walk("/ui/agents?q=HOST10"); len(got) != 8 { // host10, host100..host106
		t.Fatalf("search: %d %v", len(got), got)
	}
	if got := walk("/ui/agents?health=offline"); len(got) != 0 {
		t.Fatalf("offline: %d", len(got))
	}
	_, body := e.get(t, "/ui/agents/agent-00004", c)
	if !strings.Contains(body, "agent-00004-n0") || !strings.Contains(body, "zone=z0") {
		t.Fatalf("agent page:\n%s", body)
	}
}

func TestSessionsCapped(t *testing.T) {
	e := newEnv(t, 0)
	var first *http.Cookie
	for i := range 10 {
		c, _ := e.login(t)
		if i == 0 {
			first = c
		}
	}
	if n := e.u.sess.len(); n > 4 {
		t.Fatalf("%d sessions kept, cap 4", n)
	}
	if resp, _ := e.get(t, "/ui/", first); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("oldest session still valid: %d", resp.StatusCode)
	}
	// Expiry.
	now := time.Now()
	s := newSessions(2, time.Minute, func() time.Time { return now })
	ss, _ := s.create()
	now = now.Add(2 * time.Minute)
	if s.get(ss.id) != nil {
		t.Fatal("expired session accepted")
	}
}

func TestEventStream(t *testing.T) {
	e := newEnv(t, 1)
	c, _ := e.login(t)
	if resp, _ := e.get(t, "/ui/events/stream", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without a session: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/ui/events/stream", nil)
	req.AddCookie(c)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Scan() // retry:
	go func() {
		time.Sleep(100 * time.Millisecond)
		if _, err := e.f.Spawn(context.Background(), fleet.SpawnRequest{AgentID: "agent-00000", NodeID: "live-node"}); err != nil {
			t.Error(err)
		}
	}()
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "data: ") && strings.Contains(l, `"NodeSpawnRequested"`) && strings.Contains(l, "live-node") {
			return
		}
	}
	t.Fatal("no NodeSpawnRequested on the stream")
}

func TestOperatorCheck(t *testing.T) {
	require := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "Bearer "+testToken {
				h.ServeHTTP(w, r)
				return
			}
			w.WriteHeader(401)
		})
	}
	check := OperatorCheck(require)
	if !check(testToken) || check("") || check(testToken+"x") || check(testToken+"\r\nX: y") {
		t.Fatal("OperatorCheck")
	}
	// Over master/auth's own check.
	p, err := auth.NewPolicy(testToken)
	if err != nil {
		t.Fatal(err)
	}
	check = OperatorCheck(p.RequireOperator)
	if !check(testToken) || check("") || check(testToken[:20]) || check("x"+testToken) {
		t.Fatal("OperatorCheck over auth.Policy")
	}
}

func TestStreamsCapped(t *testing.T) {
	e := newEnv(t, 1)
	c, _ := e.login(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range MaxStreams + 1 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/ui/events/stream", nil)
		req.AddCookie(c)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		want := http.StatusOK
		if i == MaxStreams {
			want = http.StatusServiceUnavailable
		}
		if resp.StatusCode != want {
			t.Fatalf("stream %d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}
