package fetch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sutragrid/sutra/internal/testutil"
)

// statusServer answers every request with code and counts them.
func statusServer(t *testing.T, code int) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		http.Error(w, http.StatusText(code), code)
	}))
	t.Cleanup(s.Close)
	return s, &n
}

// redirector answers every request with a 307 to target + the same path.
func redirector(t *testing.T, target func() string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Redirect(w, r, target()+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(s.Close)
	return s, &n
}

// Issue 16: binary downloads go to the agent's current master; a master
// that is down or answers 5xx is replaced by another for the same request;
// a 404 is final; a 307 to the master holding the binary is followed (at
// most 3 hops, only to http(s)).
func TestDownloadFailsOverAndFollowsRedirect(t *testing.T) {
	m := newTestMaster(t)
	want := m.publish("1.2.0", payload(200_000, 3))
	down := "http://" + testutil.FreeAddr(t)
	busy, busyReqs := statusServer(t, http.StatusServiceUnavailable)
	missing, missingReqs := statusServer(t, http.StatusNotFound)

	for _, tc := range []struct {
		name, first string
	}{
		{"first master down", down},
		{"first master 503", busy.URL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(m.downloads())
			f := m.fetcher(t, t.TempDir(), func(o *Options) {
				o.BaseURL = tc.first + "," + m.srv.URL
				o.Prefer = func() string { return tc.first }
			})
			e, err := f.Ensure(context.Background(), Latest)
			if err != nil {
				t.Fatalf("Ensure(latest) with %s first: %v", tc.first, err)
			}
			if e.Checksum != want.info.Checksum || len(m.downloads()) != before+1 {
				t.Errorf("Ensure = %s %s, downloads from the second master %d, want its binary downloaded once", e.Version, e.Checksum, len(m.downloads())-before)
			}
		})
	}
	if busyReqs.Load() == 0 {
		t.Error("the 503 master was never asked first")
	}

	t.Run("404 is final", func(t *testing.T) {
		before := len(m.requests())
		f := m.fetcher(t, t.TempDir(), func(o *Options) {
			o.BaseURL = missing.URL + "," + m.srv.URL
			o.Prefer = func() string { return missing.URL }
		})
		_, err := f.Resolve(context.Background(), Latest)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve with a 404 from the current master = %v, want ErrNotFound", err)
		}
		if n := len(m.requests()) - before; n != 0 || missingReqs.Load() != 1 {
			t.Errorf("after a 404: %d requests to the other master, %d to the current one; want 0 and 1", n, missingReqs.Load())
		}
	})

	t.Run("307 followed", func(t *testing.T) {
		r1, hits := redirector(t, func() string { return m.srv.URL })
		before := len(m.downloads())
		f := m.fetcher(t, t.TempDir(), func(o *Options) { o.BaseURL = r1.URL })
		e, err := f.Ensure(context.Background(), "1.2.0")
		if err != nil || e.Checksum != want.info.Checksum {
			t.Fatalf("Ensure through a 307 = %v, %v", e, err)
		}
		if hits.Load() < 3 || len(m.downloads()) != before+1 {
			t.Errorf("redirector hit %d times, target downloads %d; want metadata, verify and download redirected", hits.Load(), len(m.downloads())-before)
		}
	})

	// A chain of redirectors: 3 hops reach the master, 4 are refused.
	chain := func(hops int) string {
		next := m.srv.URL
		for range hops {
			target := next
			s, _ := redirector(t, func() string { return target })
			next = s.URL
		}
		return next
	}
	t.Run("3 hops followed", func(t *testing.T) {
		f := m.fetcher(t, t.TempDir(), func(o *Options) { o.BaseURL = chain(3) })
		if _, err := f.Resolve(context.Background(), Latest); err != nil {
			t.Errorf("Resolve through 3 redirects: %v", err)
		}
	})
	t.Run("4th hop refused", func(t *testing.T) {
		f := m.fetcher(t, t.TempDir(), func(o *Options) { o.BaseURL = chain(4) })
		_, err := f.Resolve(context.Background(), Latest)
		if !errors.Is(err, ErrRedirect) || !strings.Contains(err.Error(), "stopped after 3 redirects") {
			t.Errorf("Resolve through 4 redirects = %v, want ErrRedirect", err)
		}
	})
	t.Run("file redirect refused", func(t *testing.T) {
		r, hits := redirector(t, func() string { return "file:///etc/passwd#" })
		f := m.fetcher(t, t.TempDir(), func(o *Options) { o.BaseURL = r.URL })
		_, err := f.Resolve(context.Background(), Latest)
		if !errors.Is(err, ErrRedirect) {
			t.Errorf("Resolve redirected to file:// = %v, want ErrRedirect", err)
		}
		if hits.Load() != 1 {
			t.Errorf("refused redirect retried: %d requests, want 1", hits.Load())
		}
	})
}

func TestParseBaseURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{"http://a:7001", 1, false},
		{"http://a:7001/, https://b:7001,http://a:7001", 2, false},
		{"http://a,ftp://b", 0, true},
		{"http://a,", 0, true},
		{"http://a?x=1", 0, true},
		{"http://u:p@a", 0, true},
		{strings.Repeat("http://a,", 16) + "http://b", 0, true},
	} {
		got, err := parseBaseURLs(tc.in)
		if (err != nil) != tc.err || len(got) != tc.want {
			t.Errorf("parseBaseURLs(%.40q) = %d URLs, %v; want %d, error %v", tc.in, len(got), err, tc.want, tc.err)
		}
	}
}

func FuzzParseBaseURLs(f *testing.F) {
	for _, s := range []string{"http://a:7001", "http://a,https://b/", " , ", "file:///x", "http://[::1]:1,http://[::1]:1/",
		"http://a?x,http://b#y", strings.Repeat("http://a,", 20), "http://%zz", "https://\u202e:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		urls, err := parseBaseURLs(s)
		if err != nil {
			return
		}
		if len(urls) < 1 || len(urls) > 16 {
			t.Fatalf("parseBaseURLs(%q) = %d URLs", s, len(urls))
		}
		for _, u := range urls {
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				t.Fatalf("parseBaseURLs(%q) kept %q", s, u)
			}
		}
	})
}
