package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), TokenFile)
	tok, created, err := LoadOrCreateToken(path)
	if err != nil || !created || len(tok) < 40 {
		t.Fatalf("LoadOrCreateToken (first) = %q, %v, %v; want a new 43-character token", tok, created, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode = %v, want 0600", path, fi.Mode().Perm())
		}
	}
	again, created, err := LoadOrCreateToken(path)
	if err != nil || created || again != tok {
		t.Fatalf("LoadOrCreateToken (second) = %q, %v, %v; want the same token, not created", again, created, err)
	}
	if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateToken(path); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("LoadOrCreateToken of a malformed file = %v, want an error saying what to do", err)
	}
}

func TestMethodRole(t *testing.T) {
	for method, want := range map[string]Role{
		"/grid.v1.GridMaster/Enroll":                                RolePublic,
		"/grid.v1.GridMaster/CABundle":                              RolePublic,
		"/grpc.health.v1.Health/Check":                              RolePublic,
		"/grid.v1.GridMaster/Heartbeat":                             RoleAgent,
		"/grid.v1.GridMaster/RegisterAgent":                         RoleAgent,
		"/grid.v1.GridMaster/RenewCertificate":                      RoleAgent,
		"/grid.v1.GridMaster/UnregisterAgent":                       RoleOperator,
		"/grid.v1.GridMaster/WatchEvents":                           RoleOperator,
		"/grid.v1.GridMaster/SomethingNew":                          RoleOperator, // closed by default
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": RoleOperator,
	} {
		if got := MethodRole(method); got != want {
			t.Errorf("MethodRole(%s) = %v, want %v", method, got, want)
		}
	}
}

func TestRequireOperator(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	p, err := NewPolicy(tok)
	if err != nil {
		t.Fatal(err)
	}
	h := p.RequireOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, tc := range []struct {
		name, header string
		want         int
	}{
		{"none", "", http.StatusUnauthorized},
		{"wrong", "Bearer " + strings.Repeat("x", len(tok)), http.StatusUnauthorized},
		{"prefix of the token", "Bearer " + tok[:20], http.StatusUnauthorized},
		{"basic", "Basic " + tok, http.StatusUnauthorized},
		{"right", "Bearer " + tok, http.StatusNoContent},
		{"right, lower-case scheme", "bearer " + tok, http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api/agents", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status = %d, want %d", w.Code, tc.want)
			}
			if tc.want == http.StatusUnauthorized && (!strings.Contains(w.Body.String(), `"error"`) || w.Header().Get("WWW-Authenticate") == "") {
				t.Fatalf("401 body %q / WWW-Authenticate %q: want JSON error and a challenge", w.Body, w.Header().Get("WWW-Authenticate"))
			}
		})
	}
}
