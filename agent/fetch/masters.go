package fetch

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/sutragrid/sutra/internal/masters"
)

// Several masters (issue 16). Options.BaseURL may list several masters'
// binary APIs. Requests are built against the first URL and sent by
// failoverTransport to the preferred one (Options.Prefer: the master the
// agent talks to), else to the one internal/masters keeps current; on a
// connection error or a 5xx the same request goes to another master, chosen
// as internal/masters chooses (random among the others, each master with
// its own backoff), until every master was tried once; then the last
// answer goes back to the retry policy of client.go. A 404 (or any other
// answer below 500) is final: the masters share one catalog.
//
// A master that does not hold a binary may answer a redirect to one that
// does: at most MaxRedirects are followed, only to http(s) URLs (anything
// else is ErrRedirect, not retried); an https target is verified against
// the same pinned CA with the same client certificate (tls.go).

// MaxRedirects bounds the redirects followed for one request.
const MaxRedirects = 3

// ErrRedirect: a redirect was refused (too many, or not to http(s)).
var ErrRedirect = errors.New("redirect refused")

// checkRedirect is http.Client.CheckRedirect. Its messages end as
// net/http's own do, so the retry policy does not retry them.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", ErrRedirect, MaxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: to unsupported protocol scheme %.20q", ErrRedirect, req.URL.Scheme)
	}
	return nil
}

// parseBaseURLs splits a comma-separated list of base URLs (1 to
// masters.MaxHosts), each http(s) with a host.
func parseBaseURLs(list string) ([]*url.URL, error) {
	parts := strings.Split(list, ",")
	if len(parts) > masters.MaxHosts {
		return nil, fmt.Errorf("fetch: BaseURL lists %d URLs (accepted: at most %d)", len(parts), masters.MaxHosts)
	}
	var out []*url.URL
	seen := map[string]bool{}
	for _, p := range parts {
		p = strings.TrimSuffix(strings.TrimSpace(p), "/")
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("fetch: BaseURL %.200q is not an http(s) URL", p)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
			return nil, fmt.Errorf("fetch: BaseURL %.200q must not carry credentials, a query or a fragment", p)
		}
		if !seen[u.String()] {
			seen[u.String()] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// failoverTransport sends requests for the first base URL to a working
// master (see above).
type failoverTransport struct {
	next    http.RoundTripper
	primary string // bases[0] as a string: the prefix requests are built with
	bases   map[string]bool
	set     *masters.Set
	prefer  func() string
	f       *Fetcher
}

func newFailoverTransport(f *Fetcher, next http.RoundTripper, bases []*url.URL) (http.RoundTripper, error) {
	if len(bases) < 2 {
		return next, nil
	}
	t := &failoverTransport{next: next, primary: bases[0].String(), bases: map[string]bool{}, prefer: f.opts.Prefer, f: f}
	var hosts []string
	for _, b := range bases {
		t.bases[b.String()] = true
		hosts = append(hosts, b.String())
	}
	f.randMu.Lock()
	seed := f.opts.Rand.Uint64() | 1
	f.randMu.Unlock()
	set, err := masters.New(masters.Options{Hosts: hosts, BackoffMin: f.opts.BackoffMin, BackoffMax: f.opts.BackoffMax, Seed: seed})
	if err != nil {
		return nil, err
	}
	t.set = set
	return t, nil
}

// first is the base URL to try first: the preferred one unless it failed
// recently (it is backing off), else the current one.
func (t *failoverTransport) first() masters.Endpoint {
	if t.prefer != nil {
		if p := strings.TrimSuffix(t.prefer(), "/"); t.bases[p] {
			if ep := (masters.Endpoint{Host: p, Addr: p}); t.set.Wait(ep) == 0 {
				return ep
			}
		}
	}
	return t.set.Current()
}

func (t *failoverTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	u := req.URL.String()
	// Requests built against the primary base only; redirects go where
	// they point.
	if req.Response != nil || !strings.HasPrefix(u, t.primary) ||
		(len(u) > len(t.primary) && u[len(t.primary)] != '/' && u[len(t.primary)] != '?') {
		return t.next.RoundTrip(req)
	}
	rest := u[len(t.primary):]
	tried := map[string]bool{}
	ep := t.first()
	for {
		r := req.Clone(req.Context())
		nu, err := url.Parse(ep.Host + rest)
		if err != nil {
			return nil, err
		}
		r.URL, r.Host = nu, ""
		if len(tried) > 0 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, fmt.Errorf("%s %s: %w: cannot resend the request body to another master", req.Method, u, ErrUnavailable)
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		tried[ep.Host] = true
		resp, err := t.next.RoundTrip(r)
		if req.Context().Err() != nil || (err == nil && resp.StatusCode < 500) {
			if err == nil {
				t.set.Succeeded(ep)
			}
			return resp, err
		}
		next, _ := t.set.Failed(ep)
		if tried[next.Host] {
			for _, e := range t.set.Endpoints() {
				if !tried[e.Host] {
					next = e
					break
				}
			}
		}
		if tried[next.Host] {
			return resp, err // every master tried: client.go's retry policy decides
		}
		what := ""
		if err != nil {
			what = err.Error()
		} else {
			what = resp.Status
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
		}
		t.f.log.Warn("master unreachable for downloads; trying another master", "from", ep.Host, "to", next.Host, "path", nu.Path, "err", what)
		ep = next
	}
}
