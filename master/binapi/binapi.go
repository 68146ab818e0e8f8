// Package binapi is the master's HTTP binary distribution API, the contract
// of the design document (docs: shared/seed/binary-distribution.md) whose
// request and response types are internal/httpapi's:
//
//	GET  /api/binaries                                   storage-server binaries
//	GET  /api/binaries/{version}/{platform}/{arch}       one binary ("latest" allowed)
//	GET  /api/binaries/latest/{platform}/{arch}          highest stable version
//	POST /api/binaries/{version}/{platform}/{arch}/verify {"checksum": "..."}
//	GET  /api/artifacts                                  artifact names
//	GET  /api/artifacts/{artifact}[/...]                 the same for any artifact
//	GET|HEAD /binaries/{filename}                        download
//	GET|HEAD /binaries/{filename}.minisig                its release signature, when signed
//
// With several masters (master/binpeers) each serves its own BINARIES_DIR;
// a download of a binary this master does not hold but another alive
// master publishes is redirected there (307, see Redirects). The listing
// and info routes describe this master's own binaries only.
//
// Trust model: nothing in a request names a file on disk. A download is
// looked up by exact name among the catalog's published entries and opened by
// the catalog through an os.Root; whatever a client encodes into the path
// (%2F, %2e%2e, backslashes, double encoding) can only fail to match. The
// answer carries the checksum the catalog computed (ETag, X-Checksum-Sha256)
// and the catalog refuses (503, Retry-After) a file whose on-disk identity no
// longer matches what it hashed. The *os.File reaches http.ServeContent
// unwrapped so the kernel sends it (sendfile).
//
// Every error is JSON {"error": "..."} (internal/httpjson); the master's
// HTTP layer (master/httpserver) turns the mux's own 404/405 answers, paths
// that are not canonical and any panic into the same form.
package binapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/internal/artifact"
	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/internal/semver"
	"github.com/sutragrid/sutra/master/catalog"
)

// MaxBodyBytes caps request bodies (the verify request).
const MaxBodyBytes = 64 << 10

// Info converts a catalog entry to its API form, the contract's BinaryInfo.
func Info(b catalog.Binary) httpapi.BinaryInfo {
	return httpapi.BinaryInfo{
		Version: b.Version, Platform: b.Platform, Arch: b.Arch, Checksum: b.SHA256,
		SizeBytes: b.Size, Path: b.Filename, UploadedAt: b.UploadedAt.Unix(), Artifact: b.Artifact,
		Signature: b.Signature,
	}
}

// Options configures the API.
type Options struct {
	// Catalog is the registry of published binaries. Required.
	Catalog *catalog.Catalog
	// Logger; nil discards.
	Logger *slog.Logger
	// MaxConcurrentDownloads caps simultaneous GET downloads; beyond it the
	// answer is 503 with Retry-After. Zero: 256.
	MaxConcurrentDownloads int
	// RetryAfter is the Retry-After of 503 answers. Zero: 2s.
	RetryAfter time.Duration
	// StallTimeout closes a download that makes no write progress (the
	// client stopped reading) for this long, releasing its slot. Zero: 30s.
	StallTimeout time.Duration
	// MaxEgress is the global bandwidth budget of downloads in bytes per
	// second, shared fairly among them (egress.go). Zero: unlimited.
	MaxEgress int64
	// MaxDownloadRate caps each download in bytes per second. Zero: unlimited.
	MaxDownloadRate int64
	// Observer, when set, sees every download served and every one
	// refused (master/metrics).
	Observer DownloadObserver
	// Peers, when set, finds another master holding a binary this one does
	// not: its download is redirected there (see Redirects; SetPeers
	// installs it later). Nil: 404.
	Peers Peers
}

// DownloadObserver records downloads: served (artifact, body bytes sent,
// ranges and HEAD included) and refused with 503 (reason: busy, hashing or
// changed).
type DownloadObserver interface {
	DownloadServed(artifact string, bytes int64)
	DownloadRefused(reason string)
}

// Download refusal reasons (DownloadObserver).
const (
	RefusedBusy    = "busy"
	RefusedHashing = "hashing"
	RefusedChanged = "changed"
)

func (a *API) refused(reason string) {
	if a.obs != nil {
		a.obs.DownloadRefused(reason)
	}
}

// DefaultStallTimeout is Options.StallTimeout's default.
const DefaultStallTimeout = 30 * time.Second

// stallChunk is how much of a download is handed to the kernel (sendfile)
// per write deadline: the deadline is renewed after each chunk.
const stallChunk = 4 << 20

// API serves the routes. Create it with New.
type API struct {
	cat        *catalog.Catalog
	log        *slog.Logger
	sem        chan struct{}
	retryAfter string
	stall      time.Duration
	egress     *egress
	yanked     atomic.Pointer[Yanker]
	peers      atomic.Pointer[Peers]
	obs        DownloadObserver
}

// New validates opts and returns the API.
func New(opts Options) (*API, error) {
	var errs []error
	if opts.Catalog == nil {
		errs = append(errs, errors.New("binapi: Catalog is required"))
	}
	if opts.MaxConcurrentDownloads < 0 {
		errs = append(errs, fmt.Errorf("binapi: MaxConcurrentDownloads %d is negative", opts.MaxConcurrentDownloads))
	}
	if opts.RetryAfter < 0 {
		errs = append(errs, fmt.Errorf("binapi: RetryAfter %s is negative", opts.RetryAfter))
	}
	if opts.StallTimeout < 0 {
		errs = append(errs, fmt.Errorf("binapi: StallTimeout %s is negative", opts.StallTimeout))
	}
	if opts.MaxEgress < 0 || opts.MaxDownloadRate < 0 {
		errs = append(errs, fmt.Errorf("binapi: MaxEgress %d and MaxDownloadRate %d must not be negative", opts.MaxEgress, opts.MaxDownloadRate))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxConcurrentDownloads == 0 {
		opts.MaxConcurrentDownloads = 256
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = 2 * time.Second
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	a := &API{
		cat: opts.Catalog, log: opts.Logger,
		sem:        make(chan struct{}, opts.MaxConcurrentDownloads),
		retryAfter: strconv.Itoa(max(1, int(opts.RetryAfter.Round(time.Second)/time.Second))),
		stall:      opts.StallTimeout,
		egress:     newEgress(opts.MaxEgress, opts.MaxDownloadRate),
		obs:        opts.Observer,
	}
	a.SetPeers(opts.Peers)
	return a, nil
}

// Register adds the routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/binaries", a.storage(a.list))
	mux.HandleFunc("GET /api/binaries/{version}/{platform}/{arch}", a.storage(a.info))
	mux.HandleFunc("POST /api/binaries/{version}/{platform}/{arch}/verify", a.storage(a.verify))
	mux.HandleFunc("GET /api/artifacts", a.artifacts)
	mux.HandleFunc("GET /api/artifacts/{artifact}", a.artifact(a.list))
	mux.HandleFunc("GET /api/artifacts/{artifact}/{version}/{platform}/{arch}", a.artifact(a.info))
	mux.HandleFunc("POST /api/artifacts/{artifact}/{version}/{platform}/{arch}/verify", a.artifact(a.verify))
	mux.HandleFunc("GET /binaries/{filename}", a.download)
}

// ActiveDownloads returns the number of GET downloads in progress.
func (a *API) ActiveDownloads() int { return len(a.sem) }

type artifactHandler func(w http.ResponseWriter, r *http.Request, artifactName string)

// storage binds the design document's /api/binaries routes to storage-server.
func (a *API) storage(h artifactHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { h(w, r, artifact.StorageServer) }
}

func (a *API) artifact(h artifactHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("artifact")
		if !artifact.Valid(name) {
			httpjson.WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown artifact %q (known: %s)",
				name, strings.Join(artifact.Artifacts(), ", ")))
			return
		}
		h(w, r, name)
	}
}

func (a *API) artifacts(w http.ResponseWriter, r *http.Request) {
	httpjson.Write(w, http.StatusOK, artifact.Artifacts())
}

func (a *API) list(w http.ResponseWriter, r *http.Request, artifactName string) {
	bins := a.cat.List(artifactName)
	out := make([]httpapi.BinaryInfo, 0, len(bins))
	for _, b := range bins {
		info := Info(b)
		info.Yanked = a.isYanked(b.Artifact, b.Version)
		out = append(out, info)
	}
	httpjson.Write(w, http.StatusOK, out)
}

// resolve validates the {version}/{platform}/{arch} parameters and finds the
// binary, writing the error answer itself when there is none.
func (a *API) resolve(w http.ResponseWriter, r *http.Request, artifactName string) (catalog.Binary, bool) {
	version, plat, arch := r.PathValue("version"), r.PathValue("platform"), r.PathValue("arch")
	var problems []string
	if !platform.ValidPlatform(plat) {
		problems = append(problems, fmt.Sprintf("unknown platform %q (accepted: %s)", plat, strings.Join(platform.Platforms(), ", ")))
	}
	if !platform.ValidArch(arch) {
		problems = append(problems, fmt.Sprintf("unknown arch %q (accepted: %s)", arch, strings.Join(platform.Arches(), ", ")))
	}
	if version != "latest" {
		if _, err := semver.Parse(version); err != nil {
			problems = append(problems, fmt.Sprintf("version: %v (or use \"latest\")", err))
		}
	}
	if len(problems) > 0 {
		httpjson.WriteError(w, http.StatusBadRequest, strings.Join(problems, "; "))
		return catalog.Binary{}, false
	}
	var (
		b  catalog.Binary
		ok bool
	)
	if version == "latest" && a.cat.HashingFor(artifactName, "", plat, arch) {
		// The answer could name an older version than the one being hashed.
		a.unavailable(w, fmt.Sprintf("the master just started and is still hashing %s binaries for %s/%s; retry shortly",
			artifactName, plat, arch))
		return catalog.Binary{}, false
	}
	if version == "latest" {
		b, ok = a.cat.LatestExcept(artifactName, plat, arch, a.yankedFunc())
	} else {
		b, ok = a.cat.Lookup(artifactName, version, plat, arch)
	}
	if ok {
		return b, true
	}
	if version != "latest" && a.cat.HashingFor(artifactName, version, plat, arch) {
		a.unavailable(w, fmt.Sprintf("%s %s for %s/%s is being hashed (the master just started); retry shortly",
			artifactName, version, plat, arch))
		return catalog.Binary{}, false
	}
	if version != "latest" && a.cat.Changing(artifactName, version, plat, arch) {
		a.unavailable(w, fmt.Sprintf("%s %s for %s/%s changed on disk and is being verified again; retry shortly",
			artifactName, version, plat, arch))
		return catalog.Binary{}, false
	}
	if version != "latest" && a.redirectVersion(w, r, artifactName, version, plat, arch) {
		return catalog.Binary{}, false
	}
	var have []string
	for _, b := range a.cat.List(artifactName) {
		if b.Platform == plat && b.Arch == arch {
			have = append(have, b.Version)
		}
	}
	msg := fmt.Sprintf("no %s %s for %s/%s", artifactName, version, plat, arch)
	if len(have) > 0 {
		msg += " (published: " + strings.Join(have, ", ") + ")"
	} else {
		msg += fmt.Sprintf(" (add %s to the master's BINARIES_DIR)", artifact.Filename(artifactName, "<version>", plat, arch))
	}
	httpjson.WriteError(w, http.StatusNotFound, msg)
	return catalog.Binary{}, false
}

func (a *API) info(w http.ResponseWriter, r *http.Request, artifactName string) {
	if b, ok := a.resolve(w, r, artifactName); ok {
		info := Info(b)
		info.Yanked = a.isYanked(b.Artifact, b.Version)
		httpjson.Write(w, http.StatusOK, info)
	}
}

func (a *API) verify(w http.ResponseWriter, r *http.Request, artifactName string) {
	b, ok := a.resolve(w, r, artifactName)
	if !ok {
		return
	}
	// A slow body must not hold the connection forever (there is no global read timeout).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(30 * time.Second))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpjson.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d KiB", MaxBodyBytes>>10))
			return
		}
		httpjson.WriteError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	var req httpapi.VerifyRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, `malformed JSON body (want {"checksum": "<sha256 hex>"}): `+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		httpjson.WriteError(w, http.StatusBadRequest, `malformed JSON body: unexpected data after the object (want {"checksum": "<sha256 hex>"})`)
		return
	}
	if strings.TrimSpace(req.Checksum) == "" { // missing, null or blank
		httpjson.WriteError(w, http.StatusBadRequest, `missing "checksum" (want {"checksum": "<sha256 hex>"})`)
		return
	}
	sum := strings.ToLower(strings.TrimSpace(req.Checksum))
	if !isHexSHA256(sum) {
		httpjson.WriteError(w, http.StatusBadRequest, fmt.Sprintf(`"checksum" must be 64 hexadecimal characters (a SHA-256), got %d characters`, len(sum)))
		return
	}
	valid := sum == b.SHA256
	httpjson.Write(w, http.StatusOK, httpapi.VerifyResponse{Valid: &valid, ExpectedChecksum: b.SHA256})
}

func (a *API) download(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("filename")
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		httpjson.WriteError(w, http.StatusBadRequest, fmt.Sprintf("%q is not a file name", name))
		return
	}
	if bin, ok := strings.CutSuffix(name, release.SignatureSuffix); ok {
		a.signature(w, r, bin)
		return
	}
	if r.Method == http.MethodGet {
		select {
		case a.sem <- struct{}{}:
			defer func() { <-a.sem }()
		default:
			a.refused(RefusedBusy)
			a.unavailable(w, fmt.Sprintf("too many concurrent downloads (limit %d); retry shortly", cap(a.sem)))
			return
		}
	}
	f, b, err := a.cat.Open(name)
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		if a.redirect(w, r, name, name) {
			return
		}
		httpjson.WriteError(w, http.StatusNotFound, fmt.Sprintf("no published binary named %q (GET /api/binaries lists them)", name))
		return
	case errors.Is(err, catalog.ErrHashing):
		a.refused(RefusedHashing)
		a.unavailable(w, fmt.Sprintf("%s is being hashed (the master just started); retry shortly", name))
		return
	case err != nil:
		a.log.Info("download refused: file changed on disk", "file", name, "err", err)
		a.refused(RefusedChanged)
		a.unavailable(w, fmt.Sprintf("%s changed on disk and is being verified again; retry shortly", name))
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	h.Set("ETag", `"`+b.SHA256+`"`)
	h.Set("X-Checksum-Sha256", b.SHA256)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if !fixRange(r) {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
		httpjson.WriteError(w, http.StatusRequestedRangeNotSatisfiable,
			fmt.Sprintf("Range %q selects no bytes of %s (%d bytes)", r.Header.Get("Range"), name, b.Size))
		return
	}
	jw := &jsonErrors{ResponseWriter: w, size: b.Size}
	sw := newStallWriter(jw, w, a.stall)
	serveFile(a.egress.wrap(r.Context(), sw), r, name, b.ModTime, f)
	sw.done()
	jw.finish()
	if a.obs != nil {
		a.obs.DownloadServed(b.Artifact, sw.sent)
	}
	if sw.stalled() {
		a.log.Info("download closed: the client stopped reading", "file", name, "remote", r.RemoteAddr,
			"stall_timeout", a.stall, "sent_bytes", sw.sent)
		return
	}
	if !catalog.Verify(f, b) {
		a.log.Warn("binary changed on disk during a download; the client's checksum verification will reject it",
			"file", name, "remote", r.RemoteAddr)
	}
	a.log.Debug("download", "file", name, "method", r.Method, "range", r.Header.Get("Range"), "remote", r.RemoteAddr)
}

// signature serves FILE.minisig of a published binary FILE from the
// catalog's memory (read, size-capped and parsed when it appeared on disk).
func (a *API) signature(w http.ResponseWriter, r *http.Request, bin string) {
	sig, ok := a.cat.Signature(bin)
	if !ok {
		if _, published := a.cat.ByFilename(bin); !published && !a.cat.Holding(bin) && a.redirect(w, r, bin, catalog.SignatureName(bin)) {
			return
		}
		msg := fmt.Sprintf("no signature for %q: the binary is not published (GET /api/binaries lists them)", bin)
		if _, published := a.cat.ByFilename(bin); published {
			msg = fmt.Sprintf("%s is not signed (no %s in BINARIES_DIR)", bin, catalog.SignatureName(bin))
		}
		httpjson.WriteError(w, http.StatusNotFound, msg)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": sig.Name}))
	h.Set("ETag", `"`+sig.ETag+`"`)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	size := int64(len(sig.Data))
	if !fixRange(r) {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		httpjson.WriteError(w, http.StatusRequestedRangeNotSatisfiable,
			fmt.Sprintf("Range %q selects no bytes of %s (%d bytes)", r.Header.Get("Range"), sig.Name, size))
		return
	}
	jw := &jsonErrors{ResponseWriter: w, size: size}
	http.ServeContent(jw, r, sig.Name, sig.ModTime, bytes.NewReader(sig.Data))
	jw.finish()
}

// fixRange handles what http.ServeContent gets wrong: a suffix range of zero
// bytes ("-0", RFC 9110 §14.1.1) is unsatisfiable, yet ServeContent answers
// it 206 with an invalid Content-Range. fixRange drops such ranges from the
// request's Range header and reports false when nothing satisfiable is left
// (the caller answers 416). With If-Range the header is dropped instead, so
// a mismatched validator still gets the whole file.
func fixRange(r *http.Request) bool {
	rng := r.Header.Get("Range")
	unit, spec, ok := strings.Cut(rng, "=")
	if !ok || strings.TrimSpace(unit) != "bytes" {
		return true
	}
	var keep []string
	dropped := false
	for part := range strings.SplitSeq(spec, ",") {
		p := strings.TrimSpace(part)
		if first, last, ok := strings.Cut(p, "-"); ok && strings.TrimSpace(first) == "" && isZeros(strings.TrimSpace(last)) {
			dropped = true
			continue
		}
		keep = append(keep, p)
	}
	switch {
	case !dropped:
		return true
	case len(keep) > 0:
		r.Header.Set("Range", "bytes="+strings.Join(keep, ","))
		return true
	case r.Header.Get("If-Range") != "":
		r.Header.Del("Range")
		return true
	}
	return false
}

func isZeros(s string) bool { return s != "" && strings.Trim(s, "0") == "" }

// serveFile is the one place a download's bytes are sent: the *os.File goes
// to http.ServeContent as is, so the ResponseWriter's ReadFrom receives it
// (behind ServeContent's io.LimitedReader) and the kernel copies it.
func serveFile(w http.ResponseWriter, r *http.Request, name string, modtime time.Time, f *os.File) {
	http.ServeContent(w, r, name, modtime, f)
}

func (a *API) unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", a.retryAfter)
	httpjson.WriteError(w, http.StatusServiceUnavailable, msg)
}

// jsonErrors turns the plain-text error answers of http.ServeContent (416,
// 412) into JSON, and passes everything else through, ReadFrom included so
// the zero-copy path stays intact.
type jsonErrors struct {
	http.ResponseWriter
	size   int64 // of the file, for a 416's Content-Range
	status int
	msg    bytes.Buffer
}

func (w *jsonErrors) WriteHeader(code int) {
	if code >= 400 && w.status == 0 {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *jsonErrors) Write(p []byte) (int, error) {
	if w.status != 0 {
		if w.msg.Len() < 1024 {
			w.msg.Write(p)
		}
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *jsonErrors) ReadFrom(src io.Reader) (int64, error) {
	if w.status != 0 {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(w.ResponseWriter, src)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *jsonErrors) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *jsonErrors) finish() {
	if w.status == 0 {
		return
	}
	msg := strings.TrimSpace(w.msg.String())
	if msg == "" {
		msg = http.StatusText(w.status)
	}
	if w.status == http.StatusRequestedRangeNotSatisfiable && w.Header().Get("Content-Range") == "" {
		// RFC 9110 §15.5.17: a 416 says the current length (ServeContent
		// does only for a range past the end, not for a malformed one).
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", w.size))
	}
	httpjson.WriteError(w.ResponseWriter, w.status, msg)
}

func isHexSHA256(s string) bool {
	return len(s) == 64 && !slices.ContainsFunc([]byte(s), func(c byte) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f')
	})
}
