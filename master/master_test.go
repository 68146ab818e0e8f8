package master

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/catalog"
)

// testMaster is the real master on loopback ports.
type testMaster struct {
	url, grpc, data string
	cat             *catalog.Catalog
	cancel          context.CancelFunc
	done            chan error
	stopOnce        sync.Once
	err             error // what Run returned, after stop
}

func startMaster(t *testing.T, dir, data string, mod func(*Options)) *testMaster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Addrs, 1)
	cats := make(chan *catalog.Catalog, 1)
	o := Options{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: dir, DataDir: data,
		Settle: 200 * time.Millisecond, ShutdownTimeout: 20 * time.Second,
		Logger:     testutil.Logger(t, slog.LevelInfo),
		Ready:      func(a Addrs) { ready <- a },
		testWiring: func(c *catalog.Catalog, _ *grpc.Server) { cats <- c },
	}
	if mod != nil {
		mod(&o)
	}
	m := &testMaster{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- Run(ctx, o) }()
	select {
	case a := <-ready:
		m.url, m.grpc, m.data = "http://"+a.HTTP, a.GRPC, data
	case err := <-m.done:
		t.Fatalf("Run returned before Ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	m.cat = <-cats
	t.Cleanup(m.stop)
	return m
}

func (m *testMaster) stop() {
	m.stopOnce.Do(func() {
		m.cancel()
		select {
		case m.err = <-m.done:
		case <-time.After(60 * time.Second):
			m.err = errors.New("Run did not return within 60s of cancel")
		}
	})
}

func writeBinary(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("body %q is not JSON: %v", a.body, err)
	}
}

// errorBody checks the answer is JSON {"error": "..."} and returns the message.
func (a answer) errorBody(t *testing.T) string {
	t.Helper()
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error answer %d has Content-Type %q, want application/json (body %q)", a.status, ct, a.body)
	}
	var e map[string]any
	a.json(t, &e)
	msg, ok := e["error"].(string)
	if !ok || msg == "" || len(e) != 1 {
		t.Errorf(`error body %s, want {"error": "..."}`, a.body)
	}
	return msg
}

func do(t *testing.T, method, url, body string, hdr ...string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// raw sends a request line exactly as written (no client-side cleaning).
func raw(t *testing.T, base, method, target string) answer {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: sutra\r\nConnection: close\r\n\r\n", method, target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// fixture is a binaries dir with a spread of versions and some files that must not be served.
type fixture struct {
	dir, data, outside string
	content            map[string][]byte
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{dir: t.TempDir(), data: t.TempDir(), content: map[string][]byte{}}
	for _, name := range []string{
		"storage-server-1.0.0-linux-x86_64", "storage-server-1.9.0-linux-x86_64", "storage-server-1.10.0-linux-x86_64",
		"storage-server-2.0.0-rc.1-linux-x86_64", "storage-server-1.0.0-darwin-aarch64",
		"storage-server-1.0.0-windows-x86_64.exe", "storage-server-3.0.0-rc.1-linux-arm",
		"sutra-agent-1.0.0-linux-x86_64", "sutra-agent-1.1.0-linux-x86_64",
	} {
		data := bytes.Repeat([]byte(name+"\n"), 2000)
		f.content[name] = data
		writeBinary(t, f.dir, name, data)
	}
	writeBinary(t, f.dir, "README.md", []byte("not a binary"))
	writeBinary(t, f.dir, "storage-server-v1.0.0-linux-x86_64", []byte("bad name"))
	writeBinary(t, f.dir, ".storage-server-9.0.0-linux-x86_64", []byte("hidden"))
	f.outside = t.TempDir()
	writeBinary(t, f.outside, "secret", []byte("TOP-SECRET-CONTENT"))
	if runtime.GOOS != "windows" {
		if err := os.Symlink(filepath.Join(f.outside, "secret"), filepath.Join(f.dir, "storage-server-9.9.9-linux-x86_64")); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestBinariesAPI(t *testing.T) {
	f := newFixture(t)
	m := startMaster(t, f.dir, f.data, nil)

	t.Run("list", func(t *testing.T) {
		a := do(t, "GET", m.url+"/api/binaries", "")
		if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /api/binaries = %d %q", a.status, a.header.Get("Content-Type"))
		}
		var raw []map[string]any
		a.json(t, &raw)
		want := []string{
			"darwin/aarch64/1.0.0", "linux/arm/3.0.0-rc.1", "linux/x86_64/2.0.0-rc.1",
			"linux/x86_64/1.10.0", "linux/x86_64/1.9.0", "linux/x86_64/1.0.0", "windows/x86_64/1.0.0",
		}
		var got []string
		for _, b := range raw {
			got = append(got, fmt.Sprint(b["platform"], "/", b["arch"], "/", b["version"]))
			keys := make([]string, 0, len(b))
			for k := range b {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, []string{"arch", "artifact", "checksum", "path", "platform", "size_bytes", "uploaded_at", "version"}) {
				t.Errorf("BinaryInfo keys = %v", keys)
			}
			if b["artifact"] != "storage-server" {
				t.Errorf("/api/binaries lists artifact %v", b["artifact"])
			}
			for _, k := range []string{"size_bytes", "uploaded_at"} {
				if n, ok := b[k].(float64); !ok || n != float64(int64(n)) || n <= 0 {
					t.Errorf("%s = %v, want a positive integer", k, b[k])
				}
			}
			if name, _ := b["path"].(string); b["checksum"] != hexsum(f.content[name]) || b["size_bytes"] != float64(len(f.content[name])) {
				t.Errorf("%s: checksum %v size %v, want %s %d", name, b["checksum"], b["size_bytes"], hexsum(f.content[name]), len(f.content[name]))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("GET /api/binaries order = %v, want %v", got, want)
		}
	})

	t.Run("info and latest", func(t *testing.T) {
		for _, tt := range []struct{ path, want string }{
			{"/api/binaries/1.0.0/linux/x86_64", "storage-server-1.0.0-linux-x86_64"},
			{"/api/binaries/2.0.0-rc.1/linux/x86_64", "storage-server-2.0.0-rc.1-linux-x86_64"},
			{"/api/binaries/latest/linux/x86_64", "storage-server-1.10.0-linux-x86_64"},
			{"/api/binaries/latest/linux/arm", "storage-server-3.0.0-rc.1-linux-arm"},
			{"/api/binaries/latest/windows/x86_64", "storage-server-1.0.0-windows-x86_64.exe"},
			{"/api/artifacts/sutra-agent/latest/linux/x86_64", "sutra-agent-1.1.0-linux-x86_64"},
			{"/api/artifacts/storage-server/1.9.0/linux/x86_64", "storage-server-1.9.0-linux-x86_64"},
		} {
			a := do(t, "GET", m.url+tt.path, "")
			var info map[string]any
			a.json(t, &info)
			if a.status != 200 || info["path"] != tt.want {
				t.Errorf("GET %s = %d %v, want %s", tt.path, a.status, info["path"], tt.want)
			}
		}
		var agents []map[string]any
		do(t, "GET", m.url+"/api/artifacts/sutra-agent", "").json(t, &agents)
		if len(agents) != 2 || agents[0]["version"] != "1.1.0" || agents[0]["artifact"] != "sutra-agent" {
			t.Errorf("GET /api/artifacts/sutra-agent = %v", agents)
		}
		var names []string
		do(t, "GET", m.url+"/api/artifacts", "").json(t, &names)
		if !slices.Equal(names, []string{"storage-server", "sutra-agent"}) {
			t.Errorf("GET /api/artifacts = %v", names)
		}
	})

	t.Run("verify", func(t *testing.T) {
		good := hexsum(f.content["storage-server-1.0.0-linux-x86_64"])
		url := m.url + "/api/binaries/1.0.0/linux/x86_64/verify"
		for _, sum := range []string{good, strings.ToUpper(good), " " + good + " "} {
			var v map[string]any
			a := do(t, "POST", url, `{"checksum": "`+sum+`"}`, "Content-Type", "application/json")
			a.json(t, &v)
			if a.status != 200 || v["valid"] != true || v["expected_checksum"] != good || len(v) != 2 {
				t.Errorf("verify %q = %d %v", sum, a.status, v)
			}
		}
		var v map[string]any
		a := do(t, "POST", url, `{"checksum": "`+strings.Repeat("0", 64)+`"}`)
		a.json(t, &v)
		if a.status != 200 || v["valid"] != false || v["expected_checksum"] != good {
			t.Errorf("verify wrong checksum = %d %v", a.status, v)
		}
		a = do(t, "POST", m.url+"/api/artifacts/sutra-agent/latest/linux/x86_64/verify",
			`{"checksum": "`+hexsum(f.content["sutra-agent-1.1.0-linux-x86_64"])+`"}`)
		a.json(t, &v)
		if v["valid"] != true {
			t.Errorf("verify sutra-agent latest = %d %s", a.status, a.body)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		verify := m.url + "/api/binaries/1.0.0/linux/x86_64/verify"
		for _, tt := range []struct {
			method, url, body string
			status            int
			msg               string
		}{
			{"POST", verify, `{"checksum": `, 400, "malformed JSON"},
			{"POST", verify, `not json`, 400, "malformed JSON"},
			{"POST", verify, `["a"]`, 400, "malformed JSON"},
			{"POST", verify, `{"checksum": "abc"} {}`, 400, "unexpected data"},
			{"POST", verify, `{}`, 400, `missing "checksum"`},
			{"POST", verify, `{"checksum": ""}`, 400, `missing "checksum"`},
			{"POST", verify, `null`, 400, `missing "checksum"`},
			{"POST", verify, ``, 400, "malformed JSON"},
			{"POST", verify, `{"checksum": 42}`, 400, "malformed JSON"},
			{"POST", verify, `{"checksum": "xyz"}`, 400, "64 hexadecimal"},
			{"POST", verify, `{"checksum": "` + strings.Repeat("a", 70<<10) + `"}`, 413, "64 KiB"},
			{"POST", m.url + "/api/binaries/7.7.7/linux/x86_64/verify", `{"checksum": "` + strings.Repeat("0", 64) + `"}`, 404, "no storage-server 7.7.7"},
			{"GET", m.url + "/api/binaries/1.0.0/freebsd/x86_64", "", 400, `unknown platform "freebsd"`},
			{"GET", m.url + "/api/binaries/1.0.0/linux/amd64", "", 400, `unknown arch "amd64"`},
			{"GET", m.url + "/api/binaries/latest/solaris/sparc", "", 400, "unknown platform"},
			{"GET", m.url + "/api/binaries/v1.0.0/linux/x86_64", "", 400, "leading 'v'"},
			{"GET", m.url + "/api/binaries/1.0/linux/x86_64", "", 400, "MAJOR.MINOR.PATCH"},
			{"GET", m.url + "/api/binaries/4.0.0/linux/x86_64", "", 404, "published: 2.0.0-rc.1, 1.10.0"},
			{"GET", m.url + "/api/binaries/latest/darwin/x86_64", "", 404, "no storage-server latest"},
			{"GET", m.url + "/api/artifacts/nginx", "", 404, "unknown artifact"},
			{"GET", m.url + "/api/artifacts/nginx/latest/linux/x86_64", "", 404, "unknown artifact"},
			{"GET", m.url + "/api/nothing", "", 404, "no such route"},
			{"GET", m.url + "/api/binaries/1.0.0/linux", "", 404, "no such route"},
			{"DELETE", m.url + "/api/binaries", "", 405, "not allowed"},
			{"POST", m.url + "/api/binaries/1.0.0/linux/x86_64", "", 405, "not allowed"},
			{"GET", verify, "", 405, "not allowed"},
			{"PUT", m.url + "/binaries/storage-server-1.0.0-linux-x86_64", "x", 405, "not allowed"},
			{"GET", m.url + "/binaries/storage-server-1.0.0-linux-x86_64", "", 416, "range"},
		} {
			var hdr []string
			if tt.status == 416 {
				hdr = []string{"Range", "bytes=999999999-"}
			}
			a := do(t, tt.method, tt.url, tt.body, hdr...)
			if a.status != tt.status {
				t.Errorf("%s %s %.40q = %d %s, want %d", tt.method, tt.url, tt.body, a.status, a.body, tt.status)
				continue
			}
			if msg := a.errorBody(t); !strings.Contains(msg, tt.msg) {
				t.Errorf("%s %s: error %q, want it to say %q", tt.method, tt.url, msg, tt.msg)
			}
			if tt.status == 405 && a.header.Get("Allow") == "" {
				t.Errorf("%s %s: 405 without Allow", tt.method, tt.url)
			}
		}
	})

	t.Run("download", func(t *testing.T) {
		name := "storage-server-1.10.0-linux-x86_64"
		want := f.content[name]
		a := do(t, "GET", m.url+"/binaries/"+name, "")
		h := a.header
		if a.status != 200 || !bytes.Equal(a.body, want) {
			t.Fatalf("GET /binaries/%s = %d, %d bytes (want 200, %d bytes)", name, a.status, len(a.body), len(want))
		}
		for k, v := range map[string]string{
			"Content-Type": "application/octet-stream", "Content-Length": fmt.Sprint(len(want)),
			"Etag": `"` + hexsum(want) + `"`, "X-Checksum-Sha256": hexsum(want),
			"Content-Disposition": `attachment; filename=` + name, "Accept-Ranges": "bytes",
		} {
			if got := h.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		a = do(t, "HEAD", m.url+"/binaries/"+name, "")
		if a.status != 200 || len(a.body) != 0 || a.header.Get("Content-Length") != fmt.Sprint(len(want)) || a.header.Get("X-Checksum-Sha256") != hexsum(want) {
			t.Errorf("HEAD = %d, body %d, Content-Length %q", a.status, len(a.body), a.header.Get("Content-Length"))
		}
		a = do(t, "GET", m.url+"/binaries/"+name, "", "Range", "bytes=100-199")
		if a.status != 206 || !bytes.Equal(a.body, want[100:200]) || a.header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(want)) {
			t.Errorf("Range 100-199 = %d %q, %d bytes", a.status, a.header.Get("Content-Range"), len(a.body))
		}
		a = do(t, "GET", m.url+"/binaries/"+name, "", "Range", fmt.Sprintf("bytes=%d-", len(want)-10))
		if a.status != 206 || !bytes.Equal(a.body, want[len(want)-10:]) {
			t.Errorf("resume from the last 10 bytes = %d, %d bytes", a.status, len(a.body))
		}
		a = do(t, "GET", m.url+"/binaries/"+name, "", "If-None-Match", `"`+hexsum(want)+`"`)
		if a.status != 304 || len(a.body) != 0 {
			t.Errorf("If-None-Match with the ETag = %d, want 304", a.status)
		}
		a = do(t, "GET", m.url+"/binaries/"+name, "", "If-None-Match", `"0000"`)
		if a.status != 200 {
			t.Errorf("If-None-Match with another ETag = %d, want 200", a.status)
		}
		// The design document's name for a windows binary without .exe is not invented.
		if a := do(t, "GET", m.url+"/binaries/storage-server-1.0.0-windows-x86_64", ""); a.status != 404 {
			t.Errorf("download of an unpublished name = %d, want 404", a.status)
		}
	})

	t.Run("traversal", func(t *testing.T) {
		for _, target := range []string{
			"/binaries/README.md",
			"/binaries/storage-server-v1.0.0-linux-x86_64",
			"/binaries/.storage-server-9.0.0-linux-x86_64",
			"/binaries/storage-server-9.9.9-linux-x86_64", // symlink leaving the dir
			"/binaries/..%2f..%2f..%2f..%2fetc%2fpasswd",
			"/binaries/..%2F" + filepath.Base(f.outside) + "%2Fsecret",
			"/binaries/%2e%2e%2f" + filepath.Base(f.outside) + "%2fsecret",
			"/binaries/%2e%2e/%2e%2e/etc/passwd",
			"/binaries/../../etc/passwd",
			"/binaries/./README.md",
			"/binaries//etc/passwd",
			"/binaries/%2Fetc%2Fpasswd",
			"/binaries/..%5c..%5cetc%5cpasswd",
			`/binaries/..\..\etc\passwd`,
			"/binaries/%252e%252e%252fetc%252fpasswd",
			"/binaries/%25252e%25252e%25252fetc",
			"/binaries/storage-server-1.0.0-linux-x86_64%00",
			"/binaries/storage-server-1.0.0-linux-x86_64%2f..%2f..%2fREADME.md",
			"/binaries/..",
			"/binaries/%2e%2e",
			"/binaries/",
			"/%2e%2e/%2e%2e/etc/passwd",
		} {
			a := raw(t, m.url, "GET", target)
			if a.status < 400 || a.status >= 500 {
				t.Errorf("GET %s = %d, want 4xx", target, a.status)
			}
			if bytes.Contains(a.body, []byte("TOP-SECRET")) || bytes.Contains(a.body, []byte("root:")) || bytes.Contains(a.body, []byte("not a binary")) {
				t.Errorf("GET %s leaked content: %q", target, a.body)
			}
			a.errorBody(t)
		}
	})

	t.Run("grpc health and reflection", func(t *testing.T) {
		creds, err := opauth.Load(m.data)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := creds.Dial(m.grpc)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health Check = %v, %v; want SERVING", resp, err)
		}
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var services []string
		for _, s := range r.GetListServicesResponse().GetService() {
			services = append(services, s.GetName())
		}
		if !slices.Contains(services, "grpc.health.v1.Health") {
			t.Errorf("reflection lists %v, want grpc.health.v1.Health", services)
		}
	})
}

func TestWatchWhileServing(t *testing.T) {
	dir := t.TempDir()
	m := startMaster(t, dir, t.TempDir(), nil)
	name := "storage-server-1.2.0-linux-aarch64"
	infoURL := m.url + "/api/binaries/1.2.0/linux/aarch64"

	// Copied in slowly: it must appear with the checksum of its final content.
	fh, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	var content []byte
	for i := range 6 {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, 100<<10)
		fh.Write(chunk)
		content = append(content, chunk...)
		if a := do(t, "GET", infoURL, ""); a.status == 200 {
			t.Fatalf("half-written file registered after %d chunks: %s", i+1, a.body)
		}
		time.Sleep(40 * time.Millisecond)
	}
	fh.Close()
	testutil.WaitFor(t, 60*time.Second, name+" to be registered", func() bool { return do(t, "GET", infoURL, "").status == 200 })
	var info map[string]any
	do(t, "GET", infoURL, "").json(t, &info)
	if info["checksum"] != hexsum(content) || info["size_bytes"] != float64(len(content)) {
		t.Fatalf("registered %v / %v, want the final content's %s / %d", info["checksum"], info["size_bytes"], hexsum(content), len(content))
	}
	if a := do(t, "GET", m.url+"/binaries/"+name, ""); a.status != 200 || !bytes.Equal(a.body, content) {
		t.Fatalf("download = %d, %d bytes", a.status, len(a.body))
	}

	// Rewritten in place (same size): never served with bytes that disagree with the checksum.
	for round := range 3 {
		next := bytes.Repeat([]byte{byte('k' + round)}, len(content))
		if err := os.WriteFile(filepath.Join(dir, name), next, 0o755); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 60*time.Second, "the rewritten content to be served", func() bool {
			a := do(t, "GET", m.url+"/binaries/"+name, "")
			switch a.status {
			case 503:
				if a.header.Get("Retry-After") == "" {
					t.Errorf("503 without Retry-After")
				}
				a.errorBody(t)
				return false
			case 404:
				return false
			case 200:
				if got := hexsum(a.body); got != a.header.Get("X-Checksum-Sha256") {
					t.Fatalf("served bytes with sha %s under X-Checksum-Sha256 %s", got, a.header.Get("X-Checksum-Sha256"))
				}
				return bytes.Equal(a.body, next)
			}
			t.Fatalf("download during rewrite = %d %s", a.status, a.body)
			return false
		})
	}

	// Removed: gone from the API and from downloads.
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, name+" to be dropped", func() bool {
		return do(t, "GET", infoURL, "").status == 404 && do(t, "GET", m.url+"/binaries/"+name, "").status == 404
	})
	var list []any
	do(t, "GET", m.url+"/api/binaries", "").json(t, &list)
	if len(list) != 0 {
		t.Errorf("list after removal = %v", list)
	}
}

func TestRestartKeepsUploadedAtWithoutRehashing(t *testing.T) {
	dir, data := t.TempDir(), t.TempDir()
	for _, n := range []string{"storage-server-1.0.0-linux-x86_64", "sutra-agent-1.0.0-darwin-aarch64"} {
		writeBinary(t, dir, n, bytes.Repeat([]byte(n), 5000))
	}
	m := startMaster(t, dir, data, nil)
	if s := m.cat.Stats(); s.HashedFiles != 2 {
		t.Errorf("first start hashed %d files, want 2", s.HashedFiles)
	}
	var before []map[string]any
	do(t, "GET", m.url+"/api/binaries", "").json(t, &before)
	m.stop()
	time.Sleep(1100 * time.Millisecond) // a fresh registration would get a later uploaded_at

	m2 := startMaster(t, dir, data, nil)
	if s := m2.cat.Stats(); s.HashedFiles != 0 || s.HashedBytes != 0 || s.CacheHits != 2 {
		t.Errorf("restart Stats = %+v, want nothing hashed and 2 cache hits", s)
	}
	var after []map[string]any
	do(t, "GET", m2.url+"/api/binaries", "").json(t, &after)
	if len(before) != 1 || len(after) != 1 || before[0]["uploaded_at"] != after[0]["uploaded_at"] || before[0]["checksum"] != after[0]["checksum"] {
		t.Errorf("after restart %v, before %v: uploaded_at and checksum must not change", after, before)
	}
}

// slowDownload starts a GET and reads only its headers, keeping the download in flight.
func slowDownload(t *testing.T, url string) (*http.Response, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func TestConcurrentDownloadCap(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20) // 64 MiB: more than socket buffers hold
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", big)
	m := startMaster(t, dir, t.TempDir(), func(o *Options) { o.MaxConcurrentDownloads = 1 })
	url := m.url + "/binaries/storage-server-1.0.0-linux-x86_64"
	first, err := slowDownload(t, url)
	if err != nil || first.StatusCode != 200 {
		t.Fatalf("first download: %v %v", first, err)
	}
	a := do(t, "GET", url, "")
	if a.status != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.errorBody(t), "too many concurrent downloads") {
		t.Errorf("second download while the first runs = %d (Retry-After %q) %s, want 503", a.status, a.header.Get("Retry-After"), a.body)
	}
	if a := do(t, "HEAD", url, ""); a.status != 200 {
		t.Errorf("HEAD while at the cap = %d, want 200 (HEAD sends no body)", a.status)
	}
	body, err := io.ReadAll(first.Body)
	first.Body.Close()
	if err != nil || !bytes.Equal(body, big) {
		t.Fatalf("first download: %d bytes, %v", len(body), err)
	}
	testutil.WaitFor(t, 60*time.Second, "the slot to be released", func() bool {
		return do(t, "HEAD", url, "").status == 200 && do(t, "GET", url, "", "Range", "bytes=0-0").status == 206
	})
}

func TestSlowLorisConnectionsAreClosed(t *testing.T) {
	m := startMaster(t, t.TempDir(), t.TempDir(), func(o *Options) { o.ReadHeaderTimeout = time.Second })
	addr := strings.TrimPrefix(m.url, "http://")
	const n = 300
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "GET /api/binaries HTTP/1.1\r\nHost: x\r\nX-Slow: ") // headers never finished
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, err := io.Copy(io.Discard, c) // returns when the server closes
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if open > 0 {
		t.Errorf("%d of %d stalled connections were still open after 60s", open, n)
	}
	if a := do(t, "GET", m.url+"/api/binaries", ""); a.status != 200 {
		t.Errorf("after the slow-loris the master answers %d", a.status)
	}
}

func TestGracefulShutdownLetsDownloadsFinish(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("sutra grid "), 3<<20) // 33 MB
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", big)
	m := startMaster(t, dir, t.TempDir(), nil)
	resp, err := slowDownload(t, m.url+"/binaries/storage-server-1.0.0-linux-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m.cancel() // SIGTERM
	time.Sleep(200 * time.Millisecond)
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, big) {
		t.Fatalf("download across shutdown: %d of %d bytes, %v", len(body), len(big), err)
	}
	if m.stop(); m.err != nil {
		t.Errorf("Run after shutdown = %v, want nil", m.err)
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, tt := range []struct {
		o    Options
		want string
	}{
		{Options{HTTPAddr: ln.Addr().String(), GRPCAddr: "127.0.0.1:0"}, "HTTP port " + port + " is in use: set HTTP_PORT (or --http-port) to a free port"},
		{Options{HTTPAddr: "127.0.0.1:0", GRPCAddr: ln.Addr().String()}, "gRPC port " + port + " is in use: set GRPC_PORT (or --grpc-port) to a free port"},
	} {
		tt.o.BinariesDir, tt.o.DataDir = t.TempDir(), t.TempDir()
		err := Run(context.Background(), tt.o)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Run with the port taken = %v, want %q", err, tt.want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{HTTPAddr: "nope", MaxConcurrentDownloads: -1, ShutdownTimeout: -1}.Validate()
	for _, want := range []string{"HTTPAddr", "MaxConcurrentDownloads", "ShutdownTimeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}

func TestConsoleOutput(t *testing.T) {
	dir := t.TempDir()
	writeBinary(t, dir, "storage-server-1.0.0-linux-x86_64", make([]byte, 3<<20))
	writeBinary(t, dir, "storage_server-1.0.0-linux-x86_64", []byte("x"))
	var buf testutil.SyncBuffer
	startMaster(t, dir, t.TempDir(), func(o *Options) { o.Console = &buf }).stop()
	out := buf.String()
	for _, want := range []string{
		"🚀 Sutra Grid Master v", "📡 gRPC: 127.0.0.1:", "🌐 HTTP: 127.0.0.1:",
		"📦 Registering binary: 1.0.0 linux x86_64\n✅ Binary registered: storage-server-1.0.0-linux-x86_64 (3.00 MB)",
		"⚠️  Skipped storage_server-1.0.0-linux-x86_64: ", "underscore instead of dash",
		"📦 Auto-registered 1 binaries",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console output lacks %q:\n%s", want, out)
		}
	}
}
