package binapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/httpserver"
)

// FuzzBinAPI drives every route (and everything that is not one) with
// generated methods, targets, Range and other headers and bodies, through
// master/httpserver's handler chain as the master serves them, and checks:
// no panic, no 5xx, every error is JSON, answers are bounded, and a byte
// range answered is the right bytes with a valid Content-Range.
func FuzzBinAPI(f *testing.F) {
	const name = "storage-server-1.0.0-linux-x86_64"
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	dir := f.TempDir()
	old := time.Now().Add(-time.Hour)
	// A signed binary: its .minisig is served from the catalog (issue 13).
	_, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	sig, _, err := release.Sign(priv, bytes.NewReader(data), release.Identity{Artifact: "storage-server", Version: "1.0.0", Platform: "linux", Arch: "x86_64"})
	if err != nil {
		f.Fatal(err)
	}
	for n, d := range map[string][]byte{name: data, name + ".minisig": sig, "sutra-agent-1.2.0-rc.1-windows-x86_64.exe": []byte("agent")} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, d, 0o755); err != nil {
			f.Fatal(err)
		}
		os.Chtimes(p, old, old)
	}
	cat, err := catalog.Open(context.Background(), catalog.Options{Dir: dir, NoWatch: true, Rescan: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cat.Close() })
	api, err := New(Options{Catalog: cat, Peers: fakePeers{}})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	h := httpserver.Handler(mux, nil)
	b, _ := cat.ByFilename(name)
	sum := b.SHA256

	type seed struct {
		method, target, rng, hname, hval string
		body                             []byte
	}
	long := strings.Repeat("A", 64<<10)
	for _, s := range []seed{
		{"GET", "/binaries/" + name, "", "", "", nil},
		{"HEAD", "/binaries/" + name, "", "", "", nil},
		{"GET", "/binaries/" + name + ".minisig", "", "", "", nil},
		{"HEAD", "/binaries/" + name + ".minisig", "bytes=3-", "", "", nil},
		{"GET", "/binaries/" + name + ".minisig", "bytes=-0", "", "", nil},
		{"GET", "/binaries/sutra-agent-1.2.0-rc.1-windows-x86_64.exe.minisig", "", "", "", nil},
		{"GET", "/binaries/.minisig.minisig", "", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=-0", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=-000", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=0-1,-0", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=-0", "If-Range", `"` + sum + `"`, nil},
		{"GET", "/binaries/" + name, "bytes=5-1", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=99999999999999999999-", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=-99999999999999999999", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=0-,0-,0-,0-", "", "", nil},
		{"GET", "/binaries/" + name, "bytes=--1", "", "", nil},
		{"GET", "/binaries/" + name, "items=0-1", "", "", nil},
		{"GET", "/binaries/" + name, "", "If-None-Match", `"` + sum + `"`, nil},
		{"GET", "/binaries/" + name, "", "If-Match", `"nope"`, nil},
		{"GET", "/binaries/" + name, "", "If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT", nil},
		{"GET", "/binaries/" + name, "", "X-Long", long, nil},
		{"GET", "/binaries/..%2f..%2fetc%2fpasswd", "", "", "", nil},
		{"GET", "/binaries/%2e%2e", "", "", "", nil},
		{"GET", "/binaries/%252e%252e%252fetc", "", "", "", nil},
		{"GET", "/binaries/..\\..\\windows", "", "", "", nil},
		{"GET", "/binaries/" + name + "%00", "", "", "", nil},
		{"GET", "/binaries/./" + name, "", "", "", nil},
		{"GET", "//binaries//" + name, "", "", "", nil},
		{"GET", "/binaries/", "", "", "", nil},
		{"GET", "/api/binaries/../../etc/passwd", "", "", "", nil},
		{"GET", "/api/binaries", "", "", "", nil},
		{"GET", "/api/binaries/latest/linux/x86_64", "", "", "", nil},
		{"GET", "/api/binaries/1.0.0/linux/x86_64", "", "", "", nil},
		{"GET", "/api/binaries/v1.0.0/plan9/mips", "", "", "", nil},
		{"GET", "/api/binaries/1.0.0-99999999999999999999/linux/x86_64", "", "", "", nil},
		{"GET", "/api/artifacts", "", "", "", nil},
		{"GET", "/api/artifacts/sutra-agent/latest/windows/x86_64", "", "", "", nil},
		{"GET", "/api/artifacts/../binaries", "", "", "", nil},
		{"GET", "/api/artifacts/nope", "", "", "", nil},
		{"POST", "/api/binaries/1.0.0/linux/x86_64/verify", "", "Content-Type", "application/json", []byte(`{"checksum":"` + sum + `"}`)},
		{"POST", "/api/binaries/1.0.0/linux/x86_64/verify", "", "", "", []byte(`{"checksum":`)},
		{"POST", "/api/binaries/1.0.0/linux/x86_64/verify", "", "", "", []byte(`{"checksum":"x"} {}`)},
		{"POST", "/api/binaries/1.0.0/linux/x86_64/verify", "", "", "", []byte(`{"checksum":null}`)},
		{"POST", "/api/binaries/1.0.0/linux/x86_64/verify", "", "", "", bytes.Repeat([]byte("["), 100<<10)},
		{"POST", "/api/artifacts/sutra-agent/1.2.0-rc.1/windows/x86_64/verify", "", "", "", []byte(`{"checksum":"` + strings.Repeat("0", 64) + `"}`)},
		{"PUT", "/binaries/" + name, "", "", "", []byte("overwrite")},
		{"DELETE", "/api/binaries", "", "", "", nil},
		{"OPTIONS", "*", "", "", "", nil},
		{"CONNECT", "/binaries/" + name, "", "", "", nil},
		{"get", "/api/binaries", "", "", "", nil},
		{"GET", "/nope", "", "", "", nil},
		{"GET", "/binaries/storage-server-9.0.0-linux-x86_64", "", "", "", nil},
		{"HEAD", "/binaries/storage-server-9.0.0-linux-x86_64.minisig", "", "", "", nil},
		{"GET", "/binaries/storage-server-9.0.0-linux-x86_64?sutra_redirected=1", "", "", "", nil},
		{"GET", "/binaries/storage-server-9.0.0-linux-x86_64", "", "X-Sutra-Redirected", "1", nil},
		{"GET", "/binaries/storage-server-9%3F%23%2F..%20x", "", "", "", nil},
		{"GET", "/api/binaries/9.0.0/linux/x86_64", "", "", "", nil},
		{"POST", "/api/artifacts/storage-server/9.0.0/windows/x86_64/verify", "", "", "", []byte(`{"checksum":"` + sum + `"}`)},
	} {
		f.Add(s.method, s.target, s.rng, s.hname, s.hval, s.body)
	}

	f.Fuzz(func(t *testing.T, method, target, rng, hname, hval string, body []byte) {
		if method == "" || strings.ContainsAny(method, " \t\r\n") {
			return // the server refuses these before any handler
		}
		u, err := url.ParseRequestURI(target)
		if err != nil && target != "*" {
			return
		}
		if target == "*" {
			u = &url.URL{Path: "*"}
		}
		r := &http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "master", RemoteAddr: "192.0.2.1:1234",
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		}
		r = r.WithContext(context.Background())
		if rng != "" {
			r.Header.Set("Range", rng)
		}
		if hname != "" {
			r.Header[http.CanonicalHeaderKey(hname)] = []string{hval}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		got := rec.Body.Bytes()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q (Range %q, %s: %.40q) = %d %s, want no 5xx for bad input", method, target, rng, hname, hval, res.StatusCode, got)
		}
		if res.StatusCode >= 400 && method != http.MethodHead {
			var e map[string]any
			if ct := res.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(got, &e) != nil || e["error"] == nil || len(e) != 1 {
				t.Fatalf("%s %q (Range %q) = %d %q %q, want a JSON error", method, target, rng, res.StatusCode, ct, got)
			}
		}
		if res.StatusCode == http.StatusTemporaryRedirect {
			loc, err := url.Parse(res.Header.Get("Location"))
			file, ok := strings.CutPrefix(loc.EscapedPath(), "/binaries/")
			if !ok && err == nil && (strings.HasPrefix(loc.Path, "/api/binaries/") || strings.HasPrefix(loc.Path, "/api/artifacts/")) {
				file, ok = "", loc.Path == u.Path
			}
			if err != nil || !ok || loc.Scheme != "https" || loc.Host != "peer.example:7001" || strings.Contains(file, "/") ||
				loc.Query().Get(RedirectedQuery) != "1" || loc.Fragment != "" {
				t.Fatalf("%s %q: 307 to %q, want https://peer.example:7001/binaries/<file>?%s=1", method, target, res.Header.Get("Location"), RedirectedQuery)
			}
			if u.Query().Get(RedirectedQuery) != "" || r.Header.Get(RedirectedHeader) != "" {
				t.Fatalf("%s %q: a redirected request was redirected again", method, target)
			}
		}
		if len(got) > 1<<20 {
			t.Fatalf("%s %q: %d-byte answer", method, target, len(got))
		}
		data := data
		if u.Path == "/binaries/"+name+".minisig" {
			data = sig
		}
		if res.StatusCode == http.StatusRequestedRangeNotSatisfiable {
			if cr := res.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", len(data)) {
				t.Fatalf("416 with Content-Range %q, want bytes */%d", cr, len(data))
			}
		}
		if res.StatusCode == http.StatusPartialContent && method == http.MethodGet && !strings.HasPrefix(res.Header.Get("Content-Type"), "multipart/") {
			var first, last, size int64
			cr := res.Header.Get("Content-Range")
			if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &size); err != nil ||
				first < 0 || last < first || last >= size || size != int64(len(data)) {
				t.Fatalf("Range %q: 206 with invalid Content-Range %q", rng, cr)
			}
			if !bytes.Equal(got, data[first:last+1]) {
				t.Fatalf("Range %q: body %q, want %q", rng, got, data[first:last+1])
			}
		}
		if res.StatusCode == http.StatusOK && method == http.MethodGet && strings.HasPrefix(u.Path, "/binaries/"+name) && !bytes.Equal(got, data) {
			t.Fatalf("200 download body %q, want the file", got)
		}
	})
}

// fakePeers says another master holds every storage-server 9.x binary.
type fakePeers struct{}

func (fakePeers) Holder(_ context.Context, name string) (string, bool) {
	return "https://peer.example:7001", strings.HasPrefix(name, "storage-server-9")
}
