package main

import (
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/pki"
)

// `sutra binaries --http https://…` against a master with --http-tls and
// --private-downloads: the CLI verifies the master with the CA
// (--ca-cert/SUTRA_CACERT or the data dir) and sends the operator token, so
// it lists; a wrong token is the "unauthorized" exit code; a CA that is not
// the master's fails the handshake.
func TestCLIBinariesOverHTTPS(t *testing.T) {
	dataDir := t.TempDir()
	ca, err := pki.Open(pki.Options{Dir: filepath.Join(dataDir, "tls")})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := auth.LoadOrCreateToken(filepath.Join(dataDir, auth.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	policy, err := auth.NewPolicy(tok)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/binaries", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, []map[string]any{
			{"version": "1.0.0", "platform": "linux", "arch": "x86_64", "checksum": strings.Repeat("ab", 32), "size_bytes": 42, "path": "storage-server-1.0.0-linux-x86_64", "uploaded_at": 1729218000},
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: policy.RequireAgentOrOperator(mux, nil), TLSConfig: ca.ServerTLSConfig()}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String()

	sutraEnv(t, map[string]string{"SUTRA_DATA_DIR": dataDir, "SUTRA_HTTP": url}, "binaries").want(t, 0, "1.0.0", "linux")
	sutraEnv(t, map[string]string{"SUTRA_CACERT": filepath.Join(dataDir, "tls", "ca.crt"), "SUTRA_TOKEN": tok}, "binaries", "--http", url).want(t, 0, "1.0.0")

	r := sutraEnv(t, map[string]string{"SUTRA_DATA_DIR": dataDir, "SUTRA_HTTP": url, "SUTRA_TOKEN": "wrong-wrong-wrong-wrong"}, "binaries")
	if r.code != exitUnauthorized || !strings.Contains(r.stderr, "401") {
		t.Errorf("wrong token: exit %d %q, want %d naming 401", r.code, r.stderr, exitUnauthorized)
	}
	other := t.TempDir()
	if _, err := pki.Open(pki.Options{Dir: filepath.Join(other, "tls")}); err != nil {
		t.Fatal(err)
	}
	r = sutraEnv(t, map[string]string{"SUTRA_DATA_DIR": dataDir, "SUTRA_HTTP": url, "SUTRA_CACERT": filepath.Join(other, "tls", "ca.crt")}, "binaries")
	if r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("another CA: exit %d %q, want a certificate error", r.code, r.stderr)
	}
}
