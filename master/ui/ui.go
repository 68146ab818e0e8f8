// Package ui is the master's web dashboard, served at /ui/ on the HTTP
// port: server-rendered html/template pages embedded in the binary, a small
// plain-JS file (no framework, no build step) and Server-Sent Events
// (/ui/events/stream, fed by fleet.Watch) that refresh the open page live.
//
// An operator logs in with the operator token (checked by master/auth); the
// browser then holds only a random session id in an HttpOnly,
// SameSite=Strict cookie, and every POST carries the session's CSRF token
// and a same-origin Origin or Referer. Every read-only page works without
// JavaScript.
package ui

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/fleet"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

// CookieName is the session cookie.
const CookieName = "sutra_ui_session"

// Limits of what a client can make the dashboard hold or compute.
const (
	// PageSize is the number of rows of one page of agents or nodes.
	PageSize = 50
	// DefaultMaxSessions caps the server-side session map.
	DefaultMaxSessions = 1024
	// DefaultSessionTTL is how long a login lasts.
	DefaultSessionTTL = 12 * time.Hour
	MaxStreams        = 64
	maxQueryLen       = 256
	maxFormBytes      = 4 << 10
	recentEvents      = 200
)

// Options configure New.
type Options struct {
	// Fleet is the master's fleet. Required.
	Fleet *fleet.Fleet
	// Catalog lists the binaries. Nil: the binaries page says so.
	Catalog *catalog.Catalog
	// Rollouts is the rollout controller. Nil: the rollouts page says
	// there is none.
	Rollouts Rollouts
	// Yanked reports a yanked release (master/releases). Nil: none.
	Yanked func(artifactName, version string) bool
	// CheckToken reports whether tok is the operator token, in constant
	// time (OperatorCheck adapts master/auth's check). Required.
	CheckToken func(tok string) bool
	// Secure marks the session cookie Secure (the HTTP port serves TLS).
	Secure bool
	// Logger receives one line per login, logout and refused request. Nil: discard.
	Logger *slog.Logger
	// MaxSessions (default DefaultMaxSessions) and SessionTTL (default
	// DefaultSessionTTL) bound the logins kept.
	MaxSessions int
	SessionTTL  time.Duration
	// Now is the clock (tests). Nil: time.Now.
	Now func() time.Time
}

// UI is the dashboard.
type UI struct {
	o       Options
	log     *slog.Logger
	tmpl    map[string]*template.Template
	sess    *sessions
	mux     *http.ServeMux
	streams atomic.Int32
}

// OperatorCheck turns an operator-token middleware (master/auth's
// Policy.RequireOperator) into a token check, so the dashboard reuses the
// master's constant-time comparison instead of copying it.
func OperatorCheck(require func(http.Handler) http.Handler) func(string) bool {
	return func(tok string) bool {
		if tok == "" || len(tok) > 1024 || strings.ContainsAny(tok, "\r\n") {
			return false
		}
		ok := false
		h := require(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ok = true }))
		r, err := http.NewRequest(http.MethodGet, "/", nil)
		if err != nil {
			return false
		}
		r.RemoteAddr = "127.0.0.1:0"
		r.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(discard{}, r)
		return ok
	}
}

// discard is a ResponseWriter that drops the answer (OperatorCheck).
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}

// New builds the dashboard.
func New(o Options) (*UI, error) {
	if o.Fleet == nil || o.CheckToken == nil {
		return nil, errors.New("ui: Fleet and CheckToken are required")
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &UI{o: o, log: log, sess: newSessions(o.MaxSessions, o.SessionTTL, o.Now)}
	if err := u.parse(); err != nil {
		return nil, err
	}
	u.routes()
	return u, nil
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": strings.Join,
	"labels": func(m map[string]string) string {
		ks := make([]string, 0, len(m))
		for k, v := range m {
			ks = append(ks, k+"="+v)
		}
		sort.Strings(ks)
		return strings.Join(ks, ", ")
	},
	"pct": func(a, b int) int {
		if b == 0 {
			return 0
		}
		return a * 100 / b
	},
}

func (u *UI) parse() error {
	u.tmpl = map[string]*template.Template{}
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", p)
		if err != nil {
			return fmt.Errorf("ui template %s: %w", p, err)
		}
		u.tmpl[name] = t
	}
	return nil
}

// Handler serves everything under Prefix.
func (u *UI) Handler() http.Handler { return u.headers(u.mux) }

func (u *UI) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix(Prefix+"static/", http.FileServerFS(static))
	m.Handle("GET /ui/static/{file}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	}))
	m.HandleFunc("GET /ui/login", u.loginPage)
	m.HandleFunc("POST /ui/login", u.login)
	m.HandleFunc("POST /ui/logout", u.authed(u.logout))
	m.HandleFunc("GET /ui/{$}", u.authed(u.overview))
	m.HandleFunc("GET /ui/agents", u.authed(u.agents))
	m.HandleFunc("GET /ui/agents/{id}", u.authed(u.agent))
	m.HandleFunc("GET /ui/nodes", u.authed(u.nodes))
	m.HandleFunc("GET /ui/binaries", u.authed(u.binaries))
	m.HandleFunc("GET /ui/rollouts", u.authed(u.rollouts))
	m.HandleFunc("GET /ui/rollouts/{id}", u.authed(u.rollout))
	m.HandleFunc("POST /ui/rollouts/{id}/{action}", u.authed(u.rolloutAction))
	m.HandleFunc("GET /ui/events", u.authed(u.events))
	m.HandleFunc("GET /ui/events/stream", u.authed(u.stream))
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		u.errorPage(w, r, http.StatusNotFound, "There is no page at "+r.URL.Path+".")
	})
	u.mux = m
}

// headers sets the security headers of every answer.
func (u *UI) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				u.log.Error("ui panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				u.errorPage(w, r, http.StatusInternalServerError, "The dashboard failed to render this page; the master's log says why.")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type ctxKey struct{}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(ctxKey{}).(*session)
	return s
}

// authed lets a request with a live session through; others are sent to
// the login page (GET) or refused (POST, the event stream).
func (u *UI) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ss *session
		if c, err := r.Cookie(CookieName); err == nil {
			ss = u.sess.get(c.Value)
		}
		if ss == nil {
			if r.Method == http.MethodGet && r.URL.Path != Prefix+"events/stream" {
				http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			u.errorPage(w, r, http.StatusUnauthorized, "You are not logged in.")
			return
		}
		if r.Method == http.MethodPost {
			if !u.sameOrigin(r) {
				u.refuse(w, r, "cross-origin POST")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil || !ss.csrfOK(r.PostForm.Get("csrf")) {
				u.refuse(w, r, "missing or wrong CSRF token")
				return
			}
		}
		// The operator's actions are recorded as theirs (master/actor),
		// like those of the token-authenticated APIs.
		ctx := actor.With(context.WithValue(r.Context(), ctxKey{}, ss), actor.Operator(r.RemoteAddr))
		h(w, r.WithContext(ctx))
	}
}

func (u *UI) refuse(w http.ResponseWriter, r *http.Request, why string) {
	u.log.Warn("ui request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", why)
	u.errorPage(w, r, http.StatusForbidden, "Refused: "+why+". Reload the page and try again.")
}

// sameOrigin requires the Origin header (or, without it, the Referer) to
// name this very scheme and host.
func (u *UI) sameOrigin(r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	want := scheme + "://" + r.Host
	if o := r.Header.Get("Origin"); o != "" {
		return o == want
	}
	ref := r.Header.Get("Referer")
	if ref == "" {
		return false
	}
	p, err := url.Parse(ref)
	return err == nil && p.Scheme == scheme && p.Host == r.Host
}

// page is what every template gets.
type page struct {
	Title  string
	Nav    string
	CSRF   string
	Live   bool
	Status int
	Data   any
}

func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	t := u.tmpl[name]
	p := page{Title: title, Nav: name, Data: data, Status: status}
	if ss := sessionOf(r); ss != nil {
		p.CSRF = ss.csrf
		p.Live = true
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, p); err != nil {
		u.log.Error("ui render", "page", name, "err", err)
		if name != "error" {
			u.errorPage(w, r, http.StatusInternalServerError, "The dashboard failed to render this page; the master's log says why.")
		}
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	u.render(w, r, status, "error", http.StatusText(status), msg)
}

// ---- login

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, http.StatusOK, "login", "Log in", map[string]string{"Next": safeNext(r.URL.Query().Get("next")), "Error": ""})
}

// safeNext keeps a post-login destination only when it is a dashboard path.
func safeNext(n string) string {
	if len(n) > maxQueryLen || !strings.HasPrefix(n, Prefix) || strings.HasPrefix(n, Prefix+"/") ||
		strings.ContainsAny(n, "\\\r\n\x00") || strings.HasPrefix(n, Prefix+"login") {
		return Prefix
	}
	if p, err := url.Parse(n); err != nil || p.Host != "" || p.Scheme != "" {
		return Prefix
	}
	return n
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if !u.sameOrigin(r) {
		u.refuse(w, r, "cross-origin login")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		u.errorPage(w, r, http.StatusBadRequest, "The login form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if !u.o.CheckToken(r.PostForm.Get("token")) {
		u.log.Warn("ui login refused", "remote", r.RemoteAddr)
		u.render(w, r, http.StatusUnauthorized, "login", "Log in", map[string]string{"Next": next, "Error": "That is not the operator token."})
		return
	}
	ss, err := u.sess.create()
	if err != nil {
		u.errorPage(w, r, http.StatusInternalServerError, "No session could be created.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: ss.id, Path: Prefix, HttpOnly: true,
		Secure: u.o.Secure, SameSite: http.SameSiteStrictMode, MaxAge: int(u.o.SessionTTL / time.Second)})
	u.log.Info("ui login", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	u.sess.remove(sessionOf(r).id)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: Prefix, HttpOnly: true,
		Secure: u.o.Secure, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	u.log.Info("ui logout", "remote", r.RemoteAddr)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// ---- pages

type overviewData struct {
	Cluster fleet.ClusterStatus
	Events  []fleet.Event
}

func (u *UI) overview(w http.ResponseWriter, r *http.Request) {
	u.render(w, r, http.StatusOK, "overview", "Overview", overviewData{Cluster: u.o.Fleet.Cluster(), Events: u.recent("", 20)})
}

// recent returns up to n of the newest events (of type typ when not
// empty), newest first.
func (u *UI) recent(typ string, n int) []fleet.Event {
	last := u.o.Fleet.LastSeq()
	since := uint64(0)
	if last > recentEvents*5 {
		since = last - recentEvents*5
	}
	evs := u.o.Fleet.Events(since, 0)
	out := make([]fleet.Event, 0, n)
	for i := len(evs) - 1; i >= 0 && len(out) < n; i-- {
		if typ == "" || evs[i].Type == typ {
			out = append(out, evs[i])
		}
	}
	return out
}

// agentFilter is the agents page's query.
type agentFilter struct {
	Health, Platform, Label, Q, Page string
}

func (f agentFilter) empty() bool {
	return f.Health == "" && f.Platform == "" && f.Label == "" && f.Q == ""
}

// query returns the filter as a query string (without the page token).
func (f agentFilter) query() string {
	v := url.Values{}
	for k, s := range map[string]string{"health": f.Health, "platform": f.Platform, "label": f.Label, "q": f.Q} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

var errQuery = errors.New("bad query")

// parseAgentFilter validates the agents page's query parameters.
func parseAgentFilter(q url.Values) (agentFilter, error) {
	f := agentFilter{Health: q.Get("health"), Platform: q.Get("platform"), Label: q.Get("label"), Q: q.Get("q"), Page: q.Get("page")}
	for _, s := range []string{f.Health, f.Platform, f.Label, f.Q, f.Page} {
		if len(s) > maxQueryLen || strings.ContainsAny(s, "\x00\r\n") {
			return agentFilter{}, fmt.Errorf("%w: a parameter is longer than %d bytes or holds control characters", errQuery, maxQueryLen)
		}
	}
	switch fleet.Health(f.Health) {
	case "", fleet.Healthy, fleet.Degraded, fleet.Offline:
	default:
		return agentFilter{}, fmt.Errorf("%w: health is healthy, degraded or offline", errQuery)
	}
	if f.Label != "" && !strings.Contains(f.Label, "=") {
		return agentFilter{}, fmt.Errorf("%w: label is KEY=VALUE", errQuery)
	}
	return f, nil
}

func (f agentFilter) match(a *fleet.Agent) bool {
	if f.Health != "" && string(a.Health) != f.Health {
		return false
	}
	if f.Platform != "" && a.Platform != f.Platform && a.Platform+"/"+a.Arch != f.Platform {
		return false
	}
	if f.Label != "" {
		k, v, _ := strings.Cut(f.Label, "=")
		if got, ok := a.Labels[k]; !ok || got != v {
			return false
		}
	}
	if f.Q != "" {
		q := strings.ToLower(f.Q)
		if !strings.Contains(strings.ToLower(a.ID), q) && !strings.Contains(strings.ToLower(a.Hostname), q) {
			return false
		}
	}
	return true
}

type agentRow struct {
	fleet.Agent
	Running, Failed, Restarts int
}

type agentsData struct {
	Filter    agentFilter
	Rows      []agentRow
	Next      template.URL // the next page, "" on the last (built from url.Values: safe)
	First     template.URL
	Cluster   fleet.ClusterStatus
	Filtered  bool
	Platforms []string
}

// filterToken is the page token of a filtered agents list: the id of the
// last agent shown (the fleet's own token serves unfiltered lists).
const filterTokenKind = 'U'

func encodeFilterToken(id string) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{filterTokenKind}, id...))
}

func decodeFilterToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != filterTokenKind {
		return "", fmt.Errorf("%w: the page token is not one of this list: start again from the first page", errQuery)
	}
	id := string(b[1:])
	if fleet.ValidateID("agent", id) != nil {
		return "", fmt.Errorf("%w: the page token is not one of this list: start again from the first page", errQuery)
	}
	return id, nil
}

// agentsPage computes one page of the agents list: the fleet's own paging
// without a filter, a scan of the fleet (sorted by id, after the token's
// id) with one.
func (u *UI) agentsPage(f agentFilter) (agentsData, error) {
	d := agentsData{Filter: f, Cluster: u.o.Fleet.Cluster(), Filtered: !f.empty(), First: Prefix + "agents"}
	if q := f.query(); q != "" {
		d.First = template.URL(Prefix + "agents?" + q)
	}
	var list []fleet.Agent
	next := ""
	if f.empty() {
		p, err := u.o.Fleet.ListAgents(fleet.Page{Size: PageSize, Token: f.Page})
		if err != nil {
			return d, fmt.Errorf("%w: %v", errQuery, err)
		}
		list, next = p.Agents, p.NextToken
	} else {
		after := ""
		if f.Page != "" {
			id, err := decodeFilterToken(f.Page)
			if err != nil {
				return d, err
			}
			after = id
		}
		all := u.o.Fleet.Agents()
		slices.SortFunc(all, func(a, b fleet.Agent) int { return strings.Compare(a.ID, b.ID) })
		for i := range all {
			a := &all[i]
			if a.ID <= after || !f.match(a) {
				continue
			}
			if len(list) == PageSize {
				next = encodeFilterToken(list[len(list)-1].ID)
				break
			}
			list = append(list, *a)
		}
	}
	d.Rows = make([]agentRow, len(list))
	for i, a := range list {
		row := agentRow{Agent: a}
		for _, n := range a.Nodes {
			switch n.State {
			case fleet.NodeRunning:
				row.Running++
			case fleet.NodeFailed, fleet.NodeBackoff:
				row.Failed++
			}
			row.Restarts += int(n.RestartCount)
		}
		d.Rows[i] = row
	}
	if next != "" {
		q := f.query()
		if q != "" {
			q += "&"
		}
		d.Next = template.URL(Prefix + "agents?" + q + "page=" + url.QueryEscape(next))
	}
	return d, nil
}

func (u *UI) agents(w http.ResponseWriter, r *http.Request) {
	f, err := parseAgentFilter(r.URL.Query())
	if err != nil {
		u.errorPage(w, r, http.StatusBadRequest, err.Error())
		return
	}
	d, err := u.agentsPage(f)
	if err != nil {
		u.errorPage(w, r, http.StatusBadRequest, err.Error())
		return
	}
	u.render(w, r, http.StatusOK, "agents", "Agents", d)
}

type agentData struct {
	Agent  fleet.Agent
	Nodes  []fleet.Node
	More   bool
	Events []fleet.Event
}

func (u *UI) agent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a, err := u.o.Fleet.Agent(id)
	if err != nil {
		u.errorPage(w, r, http.StatusNotFound, "There is no agent "+strconv.Quote(id)+".")
		return
	}
	np, err := u.o.Fleet.ListNodes(id, fleet.Page{Size: fleet.MaxPageSize})
	if err != nil {
		u.errorPage(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var evs []fleet.Event
	for _, e := range u.recent("", recentEvents) {
		if e.AgentID == id && len(evs) < 20 {
			evs = append(evs, e)
		}
	}
	u.render(w, r, http.StatusOK, "agent", "Agent "+id, agentData{Agent: a, Nodes: np.Nodes, More: np.NextToken != "", Events: evs})
}

type nodesData struct {
	Agent string
	Nodes []fleet.Node
	Next  template.URL
}

func (u *UI) nodes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	agentID, tok := q.Get("agent"), q.Get("page")
	if len(agentID) > maxQueryLen || len(tok) > maxQueryLen*4 {
		u.errorPage(w, r, http.StatusBadRequest, "A parameter is too long.")
		return
	}
	p, err := u.o.Fleet.ListNodes(agentID, fleet.Page{Size: PageSize, Token: tok})
	if err != nil {
		u.errorPage(w, r, http.StatusBadRequest, err.Error())
		return
	}
	d := nodesData{Agent: agentID, Nodes: p.Nodes}
	if p.NextToken != "" {
		v := url.Values{"page": {p.NextToken}}
		if agentID != "" {
			v.Set("agent", agentID)
		}
		d.Next = template.URL(Prefix + "nodes?" + v.Encode())
	}
	u.render(w, r, http.StatusOK, "nodes", "Nodes", d)
}

type binaryRow struct {
	catalog.Binary
	Yanked bool
}

type binariesData struct {
	Available bool
	Rows      []binaryRow
}

func (u *UI) binaries(w http.ResponseWriter, r *http.Request) {
	d := binariesData{Available: u.o.Catalog != nil}
	if u.o.Catalog != nil {
		for _, art := range []string{"storage-server", "sutra-agent"} {
			for _, b := range u.o.Catalog.List(art) {
				y := u.o.Yanked != nil && u.o.Yanked(b.Artifact, b.Version)
				d.Rows = append(d.Rows, binaryRow{Binary: b, Yanked: y})
			}
		}
	}
	u.render(w, r, http.StatusOK, "binaries", "Binaries", d)
}

type eventsData struct {
	Type   string
	Types  []string
	Events []fleet.Event
}

var eventTypes = []string{
	fleet.EventAgentRegistered, fleet.EventAgentDegraded, fleet.EventAgentOffline, fleet.EventAgentRecovered,
	fleet.EventAgentUnregistered, fleet.EventAgentRemoved, fleet.EventAgentUpgrade, fleet.EventDesiredVersion,
	fleet.EventNodeSpawnRequested, fleet.EventNodeStopRequested, fleet.EventNodeAdopted, fleet.EventNodeRunning,
	fleet.EventNodeCrashed, fleet.EventNodeRestarted, fleet.EventNodeBackoff, fleet.EventNodeFailed, fleet.EventNodeStopped,
	fleet.EventAgentEnrolled, fleet.EventCertRenewed, fleet.EventJoinTokenCreated, fleet.EventJoinTokenRemoved,
	fleet.EventEnrollmentRefused, fleet.EventAgentRevoked, fleet.EventAgentUnrevoked,
}

// validType accepts the known types and any other plain name (rollout
// events and later ones): letters only, bounded.
func validType(t string) bool {
	if len(t) > 64 {
		return false
	}
	for _, c := range t {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

func (u *UI) events(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("type")
	if !validType(typ) {
		u.errorPage(w, r, http.StatusBadRequest, "Unknown event type.")
		return
	}
	u.render(w, r, http.StatusOK, "events", "Events", eventsData{Type: typ, Types: eventTypes, Events: u.recent(typ, 100)})
}

// stream is the live-update feed: one SSE "fleet" event per fleet event
// (JSON of fleet.Event), replayed from Last-Event-ID or ?since=, and a
// comment every 15 s so proxies keep the connection open.
func (u *UI) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		u.errorPage(w, r, http.StatusInternalServerError, "Streaming is not supported here.")
		return
	}
	since := u.o.Fleet.LastSeq()
	s := r.Header.Get("Last-Event-ID")
	if s == "" {
		s = r.URL.Query().Get("since")
	}
	if s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || len(s) > 20 {
			u.errorPage(w, r, http.StatusBadRequest, "since is an event sequence number.")
			return
		}
		since = min(v, since)
	}
	if n := u.streams.Add(1); n > MaxStreams {
		u.streams.Add(-1)
		u.errorPage(w, r, http.StatusServiceUnavailable, "Too many live views are open; close some tabs.")
		return
	}
	defer u.streams.Add(-1)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	rc := http.NewResponseController(w)
	evs := make(chan fleet.Event, 256)
	done := make(chan error, 1)
	go func() {
		done <- u.o.Fleet.Watch(ctx, fleet.WatchOptions{Since: since, Follow: true, Buffer: 1024}, func(e fleet.Event) error {
			select {
			case evs <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				u.log.Warn("ui event stream ended", "err", err)
			}
			return
		case <-tick.C:
			_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case e := <-evs:
			b, err := json.Marshal(e)
			if err != nil {
				return
			}
			_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprintf(w, "id: %d\nevent: fleet\ndata: %s\n\n", e.Seq, b); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
