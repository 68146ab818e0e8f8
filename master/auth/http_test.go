package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/mtls"
)

const httpTestToken = "operator-token-0123456789abcdef"

// agentCert is a certificate as the handshake would have verified it (the
// middleware reads only VerifiedChains).
func agentCert(id string, uris ...*url.URL) *x509.Certificate {
	if uris == nil {
		uris = []*url.URL{mtls.AgentURI(id)}
	}
	c := &x509.Certificate{URIs: uris, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	c.Subject.CommonName = id
	return c
}

func serveGuarded(t *testing.T, p *Policy, check AgentCheck, cert *x509.Certificate, authz string) *httptest.ResponseRecorder {
	t.Helper()
	h := p.RequireAgentOrOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }), check)
	r := httptest.NewRequest("GET", "/binaries/x", nil)
	if cert != nil {
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	}
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// RequireAgentOrOperator (--private-downloads): an agent certificate or the
// operator token passes; nothing, a wrong token, a TLS connection without a
// verified chain is 401 JSON; a certificate naming no agent, or an agent the
// check refuses (revoked), is 403 JSON.
func TestRequireAgentOrOperator(t *testing.T) {
	p, err := NewPolicy(httpTestToken)
	if err != nil {
		t.Fatal(err)
	}
	revoked := func(id string) error {
		if id == "gone" {
			return errors.New("revoked")
		}
		return nil
	}
	for _, c := range []struct {
		name  string
		cert  *x509.Certificate
		authz string
		want  int
	}{
		{"nothing", nil, "", http.StatusUnauthorized},
		{"wrong token", nil, "Bearer nope", http.StatusUnauthorized},
		{"token without bearer", nil, httpTestToken, http.StatusUnauthorized},
		{"basic auth", nil, "Basic " + httpTestToken, http.StatusUnauthorized},
		{"operator token", nil, "Bearer " + httpTestToken, http.StatusOK},
		{"operator token, lower case scheme", nil, "bearer " + httpTestToken, http.StatusOK},
		{"agent certificate", agentCert("a1"), "", http.StatusOK},
		{"revoked agent", agentCert("gone"), "", http.StatusForbidden},
		{"revoked agent with the operator token", agentCert("gone"), "Bearer " + httpTestToken, http.StatusForbidden},
		{"certificate naming no agent", agentCert("a1", &url.URL{Scheme: "https", Host: "example.com"}), "", http.StatusForbidden},
	} {
		w := serveGuarded(t, p, revoked, c.cert, c.authz)
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, w.Code, c.want)
			continue
		}
		if c.want == http.StatusOK {
			continue
		}
		var e struct{ Error string }
		if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s: body %q is not a JSON error", c.name, w.Body.String())
		}
		if strings.Contains(w.Body.String(), httpTestToken) {
			t.Errorf("%s: the answer contains the operator token", c.name)
		}
	}
	// An unverified TLS connection (no chain) is anonymous.
	h := p.RequireAgentOrOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	r := httptest.NewRequest("GET", "/api/binaries", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{agentCert("a1")}}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Errorf("unverified peer certificate: %d, want 401", w.Code)
	}
}

// FuzzRequireAgentOrOperator: no Authorization header but the exact token
// passes, and every refusal is a JSON 401 that does not echo the header.
func FuzzRequireAgentOrOperator(f *testing.F) {
	for _, s := range []string{"", "Bearer", "Bearer ", "Bearer " + httpTestToken, "bearer " + httpTestToken + " ", "Bearer " + httpTestToken + "x",
		"Bearer\t" + httpTestToken, "Basic Zm9vOmJhcg==", "Bearer " + strings.Repeat("A", 10000), "Bearer \x00", "Bearer " + httpTestToken[:10]} {
		f.Add(s)
	}
	p, err := NewPolicy(httpTestToken)
	if err != nil {
		f.Fatal(err)
	}
	h := p.RequireAgentOrOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }), nil)
	f.Fuzz(func(t *testing.T, authz string) {
		r := httptest.NewRequest("GET", "/binaries/x", nil)
		r.Header["Authorization"] = []string{authz}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		ok := bearerOf(authz) == httpTestToken
		switch {
		case ok && w.Code != http.StatusOK:
			t.Fatalf("the operator token (%q) was refused: %d", authz, w.Code)
		case !ok && w.Code != http.StatusUnauthorized:
			t.Fatalf("%q got %d, want 401", authz, w.Code)
		case !ok:
			var e struct{ Error string }
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Fatalf("401 body %q is not a JSON error", w.Body.String())
			}
			if len(authz) > 16 && strings.Contains(w.Body.String(), authz) {
				t.Fatal("the answer echoes the Authorization header")
			}
		}
	})
}

// The revocation check (SetCertCheck, the fleet's denylist) applies to the
// private binary routes too.
func TestRequireAgentOrOperatorRevocation(t *testing.T) {
	p, err := NewPolicy(httpTestToken)
	if err != nil {
		t.Fatal(err)
	}
	p.SetCertCheck(func(id string, _ *x509.Certificate) error {
		if id == "gone" {
			return errors.New("agent gone was revoked")
		}
		return nil
	})
	if w := serveGuarded(t, p, nil, agentCert("gone"), ""); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "revoked") {
		t.Errorf("revoked agent: %d %s, want 403 saying revoked", w.Code, w.Body.String())
	}
	if w := serveGuarded(t, p, nil, agentCert("a1"), ""); w.Code != http.StatusOK {
		t.Errorf("other agent: %d, want 200", w.Code)
	}
}
