package binpeers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/master/binapi"
	"github.com/sutragrid/sutra/master/binpeers"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/httpserver"
	"github.com/sutragrid/sutra/master/store"
)

const bin = "storage-server-1.2.0-linux-x86_64"

// testCoord is a coordinator of masters whose liveness the test sets.
type testCoord struct {
	self  cluster.Member
	alive *aliveSet
}

func (c testCoord) Self() cluster.Member { return c.self }
func (c testCoord) Alive(id string) bool { return c.alive.is(id) }

type aliveSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (a *aliveSet) set(id string, alive bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids[id] = alive
}

func (a *aliveSet) is(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ids[id]
}

// logBuf collects log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// master is one master's catalog, registry and binary API on a real
// loopback HTTP server, on its own BINARIES_DIR.
type master struct {
	id  string
	dir string
	url string
	cat *catalog.Catalog
	reg *binpeers.Registry
	log *logBuf
}

func writeFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	// Write beside, then rename: the catalog sees one complete file.
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(tmp, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func startMaster(t *testing.T, st store.Store, alive *aliveSet, id string, files map[string][]byte) *master {
	t.Helper()
	m := &master{id: id, dir: t.TempDir(), log: &logBuf{}}
	for name, data := range files {
		writeFile(t, m.dir, name, data)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(httpserver.Handler(mux, nil))
	t.Cleanup(srv.Close)
	m.url = srv.URL
	log := slog.New(slog.NewTextHandler(m.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("master", id)
	ctx := context.Background()
	var err error
	m.cat, err = catalog.Open(ctx, catalog.Options{Dir: m.dir, Logger: log, Debounce: 10 * time.Millisecond,
		Settle: 20 * time.Millisecond, Rescan: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cat.Close() })
	alive.set(id, true)
	m.reg, err = binpeers.New(ctx, binpeers.Options{Store: st, Catalog: m.cat, Logger: log,
		Coordinator: testCoord{self: cluster.Member{ID: id, HTTPURL: srv.URL}, alive: alive}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.reg.Close() })
	api, err := binapi.New(binapi.Options{Catalog: m.cat, Logger: log, Peers: m.reg})
	if err != nil {
		t.Fatal(err)
	}
	api.Register(mux)
	return m
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newAlive() *aliveSet { return &aliveSet{ids: map[string]bool{}} }

// noFollow is a client that shows redirects instead of following them.
var noFollow = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func do(t *testing.T, c *http.Client, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// eventually retries cond until it holds or 5 seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func status(t *testing.T, c *http.Client, method, url string) int {
	resp, _ := do(t, c, method, url)
	return resp.StatusCode
}

func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func is404JSON(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if resp.StatusCode != http.StatusNotFound || json.Unmarshal(body, &e) != nil || e.Error == "" {
		t.Fatalf("answer %d %q, want 404 with a JSON error", resp.StatusCode, body)
	}
}

// Issue 16: a master that does not hold a binary another master publishes
// redirects its downloads (GET, HEAD, the .minisig) to that master.
func TestRedirectToMasterThatHoldsIt(t *testing.T) {
	st, alive := openStore(t), newAlive()
	data := []byte("the one true storage server")
	_, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ident, _ := release.IdentityOfFile(bin)
	sig, _, err := release.Sign(priv, bytes.NewReader(data), ident)
	if err != nil {
		t.Fatal(err)
	}
	a := startMaster(t, st, alive, "a", map[string][]byte{bin: data, bin + ".minisig": sig})
	b := startMaster(t, st, alive, "b", nil)
	eventually(t, "b sees a's record", func() bool { _, ok := b.reg.Holder(context.Background(), bin); return ok })

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, file := range []string{bin, bin + ".minisig"} {
			resp, _ := do(t, noFollow, method, b.url+"/binaries/"+file)
			want := a.url + "/binaries/" + file + "?" + binapi.RedirectedQuery + "=1"
			if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want {
				t.Fatalf("%s b/binaries/%s = %d Location %q, want 307 to %q", method, file, resp.StatusCode, resp.Header.Get("Location"), want)
			}
		}
	}
	resp, body := do(t, http.DefaultClient, http.MethodGet, b.url+"/binaries/"+bin)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) || resp.Header.Get("X-Checksum-Sha256") != sum(data) {
		t.Fatalf("GET b/binaries/%s followed = %d %q (checksum %s), want 200 with a's bytes", bin, resp.StatusCode, body, resp.Header.Get("X-Checksum-Sha256"))
	}
	resp, body = do(t, http.DefaultClient, http.MethodGet, b.url+"/binaries/"+bin+".minisig")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, sig) {
		t.Fatalf("GET b/binaries/%s.minisig followed = %d %q, want a's signature", bin, resp.StatusCode, body)
	}
	resp, _ = do(t, http.DefaultClient, http.MethodHead, b.url+"/binaries/"+bin)
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD b/binaries/%s followed = %d length %d, want 200 and %d", bin, resp.StatusCode, resp.ContentLength, len(data))
	}
	// An agent resolving that exact version on B gets A's metadata and
	// verification; "latest" stays B's own answer.
	resp, body = do(t, http.DefaultClient, http.MethodGet, b.url+"/api/binaries/1.2.0/linux/x86_64")
	var info struct {
		Checksum string `json:"checksum"`
		Path     string `json:"path"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &info) != nil || info.Checksum != sum(data) || info.Path != bin {
		t.Fatalf("GET b/api/binaries/1.2.0/linux/x86_64 followed = %d %s, want a's info", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, b.url+"/api/binaries/1.2.0/linux/x86_64/verify", strings.NewReader(`{"checksum":"`+sum(data)+`"}`))
	vresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(vresp.Body)
	vresp.Body.Close()
	if vresp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"valid": true`) {
		t.Fatalf("POST b/.../verify followed = %d %s, want valid", vresp.StatusCode, body)
	}
	if code := status(t, noFollow, http.MethodGet, b.url+"/api/binaries/latest/linux/x86_64"); code != http.StatusNotFound {
		t.Fatalf("GET b/api/binaries/latest/linux/x86_64 = %d, want 404 (b's own latest)", code)
	}
	// A holds it: A serves it, never redirects to itself.
	if code := status(t, noFollow, http.MethodGet, a.url+"/binaries/"+bin); code != http.StatusOK {
		t.Fatalf("GET a/binaries/%s = %d, want 200", bin, code)
	}
	// /api/binaries stays each master's own list.
	_, body = do(t, http.DefaultClient, http.MethodGet, b.url+"/api/binaries")
	if strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("b's /api/binaries = %s, want [] (its own binaries)", body)
	}
}

// Issue 16: no master holds it, or the one that does is not alive: 404 JSON.
func TestNoHolder404(t *testing.T) {
	st, alive := openStore(t), newAlive()
	a := startMaster(t, st, alive, "a", map[string][]byte{bin: []byte("bytes")})
	b := startMaster(t, st, alive, "b", nil)
	eventually(t, "b sees a's record", func() bool { _, ok := b.reg.Holder(context.Background(), bin); return ok })

	resp, body := do(t, noFollow, http.MethodGet, b.url+"/binaries/storage-server-9.9.9-linux-x86_64")
	is404JSON(t, resp, body)

	alive.set(a.id, false)
	for _, file := range []string{bin, bin + ".minisig"} {
		resp, body = do(t, noFollow, http.MethodGet, b.url+"/binaries/"+file)
		is404JSON(t, resp, body)
	}
	alive.set(a.id, true)
	if code := status(t, noFollow, http.MethodGet, b.url+"/binaries/"+bin); code != http.StatusTemporaryRedirect {
		t.Fatalf("GET b/binaries/%s with a alive again = %d, want 307", bin, code)
	}
}

// Issue 16: a master whose file has the same name as another master's but
// different bytes does not publish it, and says why, with both checksums
// and the other master's id; once its copy is identical, it publishes it.
func TestConflictingChecksumRefused(t *testing.T) {
	st, alive := openStore(t), newAlive()
	good, bad := []byte("release build"), []byte("a local rebuild")
	a := startMaster(t, st, alive, "a", map[string][]byte{bin: good})
	b := startMaster(t, st, alive, "b", map[string][]byte{bin: bad})

	if _, ok := b.cat.ByFilename(bin); ok {
		t.Fatalf("b publishes %s with sha256 %s although a publishes %s", bin, sum(bad), sum(good))
	}
	logs := b.log.String()
	var line string
	for l := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, bin) {
			line = l
		}
	}
	for _, want := range []string{sum(good), sum(bad), "master a", "binaries must be identical on every master"} {
		if !strings.Contains(line, want) {
			t.Fatalf("b's error line %q does not say %q; logs:\n%s", line, want, logs)
		}
	}
	if n := strings.Count(logs, "level=ERROR"); n != 1 {
		t.Fatalf("b logged %d error lines, want 1 (the refusal, once):\n%s", n, logs)
	}
	// A keeps serving; B redirects to A (it does not hold the agreed file).
	resp, body := do(t, http.DefaultClient, http.MethodGet, a.url+"/binaries/"+bin)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, good) {
		t.Fatalf("GET a/binaries/%s = %d %q, want a's file", bin, resp.StatusCode, body)
	}
	resp, body = do(t, http.DefaultClient, http.MethodGet, b.url+"/binaries/"+bin)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, good) {
		t.Fatalf("GET b/binaries/%s (followed) = %d %q, want a's file", bin, resp.StatusCode, body)
	}
	// Rescans do not log the refusal again.
	time.Sleep(500 * time.Millisecond)
	if n := strings.Count(b.log.String(), "level=ERROR"); n != 1 {
		t.Fatalf("b logged %d error lines after rescans, want 1", n)
	}

	writeFile(t, b.dir, bin, good)
	eventually(t, "b publishes the identical file", func() bool {
		got, ok := b.cat.ByFilename(bin)
		return ok && got.SHA256 == sum(good)
	})
	if code := status(t, noFollow, http.MethodGet, b.url+"/binaries/"+bin); code != http.StatusOK {
		t.Fatalf("GET b/binaries/%s with the identical file = %d, want 200", bin, code)
	}
}

// Issue 16: two masters publishing different files under one name at the
// same moment: exactly one wins.
func TestConcurrentConflictOneWins(t *testing.T) {
	st, alive := openStore(t), newAlive()
	coord := func(id string) binpeers.Coordinator {
		alive.set(id, true)
		return testCoord{self: cluster.Member{ID: id, HTTPURL: "http://" + id + ".example:7001"}, alive: alive}
	}
	ctx := context.Background()
	for round := range 20 {
		name := "storage-server-1.0." + string(rune('0'+round%10)) + "-linux-x86_64"
		if round >= 10 {
			name = "storage-server-2.0." + string(rune('0'+round%10)) + "-linux-x86_64"
		}
		var regs []*binpeers.Registry
		for _, id := range []string{"a", "b", "c"} {
			r, err := binpeers.New(ctx, binpeers.Options{Store: st, Coordinator: coord(id)})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			regs = append(regs, r)
		}
		errs := make([]error, len(regs))
		var wg sync.WaitGroup
		for i, r := range regs {
			wg.Go(func() { errs[i] = r.Admit(name, sum([]byte{byte(i)}), 1) })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d masters published different files under %s (%v), want 1", round, won, name, errs)
		}
	}
}

// Issue 16: no redirect loops: a redirected request for a file this master
// does not hold is answered 404, whatever its view says.
func TestRedirectLoopRefused(t *testing.T) {
	st, alive := openStore(t), newAlive()
	a := startMaster(t, st, alive, "a", map[string][]byte{bin: []byte("bytes")})
	b := startMaster(t, st, alive, "b", nil)
	eventually(t, "b sees a's record", func() bool { _, ok := b.reg.Holder(context.Background(), bin); return ok })

	resp, body := do(t, noFollow, http.MethodGet, b.url+"/binaries/"+bin+"?"+binapi.RedirectedQuery+"=1")
	is404JSON(t, resp, body)
	req, _ := http.NewRequest(http.MethodGet, b.url+"/binaries/"+bin, nil)
	req.Header.Set(binapi.RedirectedHeader, "1")
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	is404JSON(t, resp, body)

	// Views that point at each other (records of a file neither holds
	// any more): one redirect, then 404, never a loop.
	const gone = "storage-server-3.0.0-linux-x86_64"
	h := sum([]byte("gone"))
	rec := func(url string) []byte {
		return []byte(`{"sha256":"` + h + `","size":4,"http_url":"` + url + `","at":"2026-01-01T00:00:00Z"}`)
	}
	err = st.Apply(context.Background(), []store.Op{
		store.Put(store.TableBinaries, []byte(gone), []byte(`{"sha256":"`+h+`","size":4,"masters":["a","b"]}`)),
		store.Put(store.TableBinaries, []byte(gone+"/a"), rec(a.url)),
		store.Put(store.TableBinaries, []byte(gone+"/b"), rec(b.url)),
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "both views name the other", func() bool {
		ua, oka := a.reg.Holder(context.Background(), gone)
		ub, okb := b.reg.Holder(context.Background(), gone)
		return oka && okb && ua == b.url && ub == a.url
	})
	var hops int
	counting := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { hops++; return nil }}
	for _, m := range []*master{a, b} {
		hops = 0
		resp, body = do(t, counting, http.MethodGet, m.url+"/binaries/"+gone)
		if hops != 1 {
			t.Fatalf("GET %s/binaries/%s took %d redirects, want 1", m.id, gone, hops)
		}
		is404JSON(t, resp, body)
	}
}

// Issue 16: a master that deletes a file deletes its record; the others
// then answer 404. A restart removes records of files gone meanwhile.
func TestRemovedFileDeregistered(t *testing.T) {
	st, alive := openStore(t), newAlive()
	a := startMaster(t, st, alive, "a", map[string][]byte{bin: []byte("bytes")})
	b := startMaster(t, st, alive, "b", nil)
	eventually(t, "b sees a's record", func() bool { _, ok := b.reg.Holder(context.Background(), bin); return ok })

	if err := os.Remove(filepath.Join(a.dir, bin)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eventually(t, "a's record and the claim deleted", func() bool {
		v1, _, _ := st.Get(ctx, store.TableBinaries, []byte(bin+"/a"))
		v2, _, _ := st.Get(ctx, store.TableBinaries, []byte(bin))
		return v1 == nil && v2 == nil
	})
	eventually(t, "b's view drops it", func() bool { _, ok := b.reg.Holder(ctx, bin); return !ok })
	resp, body := do(t, noFollow, http.MethodGet, b.url+"/binaries/"+bin)
	is404JSON(t, resp, body)

	// A stale record of a master (left by a run that stopped before it
	// could delete it) goes when that master starts again without the file.
	stale := []byte(`{"sha256":"` + sum([]byte("x")) + `","size":1,"http_url":"http://c.example:7001","at":"2026-01-01T00:00:00Z"}`)
	claim := []byte(`{"sha256":"` + sum([]byte("x")) + `","size":1,"masters":["c"]}`)
	if err := st.Apply(ctx, []store.Op{store.Put(store.TableBinaries, []byte(bin+"/c"), stale), store.Put(store.TableBinaries, []byte(bin), claim)}); err != nil {
		t.Fatal(err)
	}
	startMaster(t, st, alive, "c", nil)
	for _, k := range []string{bin + "/c", bin} {
		if v, _, _ := st.Get(ctx, store.TableBinaries, []byte(k)); v != nil {
			t.Fatalf("after c restarted without %s, %s = %s, want deleted", bin, k, v)
		}
	}
}

// Issue 16: a refused file is published once no alive master holds the
// other checksum (the holder deleted it, or died), found by the rescan.
func TestConflictReleased(t *testing.T) {
	st, alive := openStore(t), newAlive()
	good, other := []byte("release build"), []byte("another build")
	a := startMaster(t, st, alive, "a", map[string][]byte{bin: good})
	b := startMaster(t, st, alive, "b", map[string][]byte{bin: other})
	if _, ok := b.cat.ByFilename(bin); ok {
		t.Fatalf("b publishes %s against a's checksum", bin)
	}
	// a deletes its file: b takes the name with its own checksum.
	if err := os.Remove(filepath.Join(a.dir, bin)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b publishes its file once a no longer holds the name", func() bool {
		got, ok := b.cat.ByFilename(bin)
		return ok && got.SHA256 == sum(other)
	})
	// a comes back with its old file: refused now (b is alive and holds the other).
	writeFile(t, a.dir, bin, good)
	time.Sleep(300 * time.Millisecond)
	if _, ok := a.cat.ByFilename(bin); ok {
		t.Fatalf("a publishes %s again although b holds it with another checksum", bin)
	}
	// b dies: a's rescan takes the name over.
	alive.set("b", false)
	eventually(t, "a publishes once b is not alive", func() bool { _, ok := a.cat.ByFilename(bin); return ok })
}

// The records of one master are capped: beyond the cap a file is refused.
func TestRecordCap(t *testing.T) {
	st, alive := openStore(t), newAlive()
	alive.set("a", true)
	r, err := binpeers.New(context.Background(), binpeers.Options{Store: st, MaxRecords: 2,
		Coordinator: testCoord{self: cluster.Member{ID: "a"}, alive: alive}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		err := r.Admit("storage-server-"+v+"-linux-x86_64", sum([]byte(v)), 1)
		if (err != nil) != (i == 2) {
			t.Fatalf("Admit #%d = %v, want an error only beyond the cap of 2", i+1, err)
		}
	}
	// Withdrawing one frees a place.
	r.Withdrawn("storage-server-1.0.0-linux-x86_64")
	if err := r.Admit("storage-server-1.0.2-linux-x86_64", sum([]byte("1.0.2")), 1); err != nil {
		t.Fatalf("Admit after a withdrawal = %v, want nil", err)
	}
	for _, bad := range []string{"../x", "storage-server-1.0.0-linux-x86_64/evil", ""} {
		if err := r.Admit(bad, sum([]byte("x")), 1); err == nil {
			t.Fatalf("Admit(%q) = nil, want an error", bad)
		}
	}
}
