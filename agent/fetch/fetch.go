// Package fetch gets the storage-server binary for this machine from the
// master's binary distribution API (the design document's HTTP contract,
// internal/httpapi), verifies it and keeps it in a local cache (package
// cache).
//
// Trust model: the master is the source of truth. A download is written to a
// private, non-executable "<name>.partial" file in its version's cache
// directory and hashed with SHA-256 while it is written (one pass, no re-read).
// It becomes executable only when (1) the streamed hash equals the checksum of
// the master's metadata, (2) its size equals the metadata's size_bytes (more
// bytes are refused while streaming) and (3) the master's
// POST /api/binaries/{version}/{platform}/{arch}/verify answers valid:true for
// that hash. Then it is chmod 0755, fsynced and renamed atomically into place.
// On a mismatch the partial file is deleted, the event is logged at error
// level and the fetch is retried with backoff a bounded number of times; an
// unverified file is never at the executable path and never executable.
// Before every use, cache.Verified re-hashes the cached file against the
// checksum recorded at commit time. Without release keys, with plain http the
// checks detect corruption, not a malicious master or network (use an https
// master_binary_url); with release keys (Options.Keys) every binary must also
// carry a release signature, see verify.go.
//
// Network policy (go-retryablehttp, configured deliberately): each request is
// retried on connection errors and on 429, 502, 503 and 504 with exponential
// backoff and full jitter (1 s doubling to a 60 s cap), honouring Retry-After
// clamped to the cap. With several masters (masters.go) a request first moves
// to another master on a connection error or a 5xx; redirects are followed at
// most 3 times, to http(s) only. Other statuses are not retried by the transport: a 404
// for the metadata means the master does not publish the binary (ErrNotFound,
// returned at once); a 500, a truncated or stalled body, or a checksum mismatch
// fails the attempt, and Ensure retries whole attempts with the same backoff up
// to Options.Attempts. An interrupted body (connection lost, shorter than
// announced, or no byte for StallTimeout) is resumed from where it stopped with
// Range + If-Range (the ETag, or Last-Modified); a 200 answer to a ranged
// request restarts from zero. Every fetch has an overall deadline (Timeout).
// Proxies come from HTTPS_PROXY/HTTP_PROXY/NO_PROXY.
//
// A partial download interrupted by the network (or by cancellation) is kept,
// with a small JSON file naming its ETag and checksum, so that a later
// attempt, or a restarted agent, resumes it; on every other failure
// (verification, a wrong size, a failed write such as "no space left on
// device", a 4xx) it is deleted, so it never stays behind filling the disk.
// Cache.Prune removes abandoned partials of old versions. Package cache
// decides how files are opened: never through a symlink or hard link planted
// in the cache, and not at all in a cache directory other users can write.
//
// Master unreachable: Ensure reports it once, after the first failed request
// (Options.OnUnreachable and a warning naming the newest verified cached
// version) and goes on retrying; Offline uses the verified cache without
// asking the master, never choosing a version Options.Failed rejects.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/time/rate"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/ratchet"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/internal/semver"
	"github.com/sutragrid/sutra/internal/version"
)

// Errors callers act on (test with errors.Is).
var (
	// ErrNotFound: the master publishes no such binary for this platform (permanent).
	ErrNotFound = errors.New("not published by the master")
	// ErrUnavailable: the master could not be reached or kept failing (transient).
	ErrUnavailable = errors.New("master unavailable")
	// ErrChecksum: the download did not match the master's checksum (transient: retried).
	ErrChecksum = errors.New("checksum mismatch")
	// ErrUnsupportedPlatform: no binaries exist for this OS/CPU (permanent).
	ErrUnsupportedPlatform = errors.New("unsupported platform")
	// ErrCacheDir: the cache directory cannot be written, is full, or is not
	// private to the agent (permanent until fixed).
	ErrCacheDir = errors.New("cache dir unusable")
	// ErrBinaryPath: storage.binary_path is missing or not executable.
	ErrBinaryPath = errors.New("binary_path unusable")
	// ErrBadResponse: the server answered something that is not the contract
	// (HTML page, wrong length, bad metadata); transient, retried.
	ErrBadResponse = errors.New("bad response from master")
	// ErrStalled: no byte arrived for StallTimeout (resumed automatically).
	ErrStalled = errors.New("download stalled")
	// ErrRecordedFailed: the cached version was recorded as failed on this
	// agent (Options.Failed) and is not used offline.
	ErrRecordedFailed = errors.New("recorded as failed")
)

// Latest asks Ensure and Resolve for the newest version the master publishes.
const Latest = "latest"

// Options configures a Fetcher. Zero values mean the documented defaults.
type Options struct {
	// BaseURL is the master's binary API, e.g. http://localhost:7001 (config
	// storage.master_binary_url), or several masters' as a comma-separated
	// list (masters.go: a request moves to another master on a connection
	// error or a 5xx). Required.
	BaseURL string
	// Prefer, when set, names the base URL (one of BaseURL's) to try first:
	// the binary API of the master the agent currently talks to. An unknown
	// or empty answer is ignored.
	Prefer func() string
	// CacheDir is the cache root (config agent.cache_dir). Required.
	CacheDir string
	// Artifact is the binary's name (default "storage-server", served under
	// /api/binaries; any other name uses /api/artifacts/{artifact}).
	Artifact string
	// Platform and Arch select the binary (default: this machine, via
	// internal/platform.Current).
	Platform, Arch string

	// Attempts bounds whole fetch attempts in Ensure (default 5).
	Attempts int
	// Retries bounds transport-level retries of one request (default 5).
	Retries int
	// BackoffMin and BackoffMax bound the full-jitter exponential backoff of
	// both levels and clamp Retry-After (defaults 1 s and 60 s).
	BackoffMin, BackoffMax time.Duration
	// ConnectTimeout bounds a TCP connect (default 10 s).
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers (default 30 s).
	ResponseHeaderTimeout time.Duration
	// StallTimeout aborts and resumes a body that delivers no byte for this
	// long (default 30 s).
	StallTimeout time.Duration
	// MaxResumes bounds consecutive resumes that made no progress (default 3).
	MaxResumes int
	// Timeout is the overall deadline of one Ensure (default 30 min).
	Timeout time.Duration
	// MaxSize refuses metadata announcing a larger binary (default 2 GiB).
	MaxSize int64
	// Keep is how many newest versions Prune keeps (default 3).
	Keep int

	// TLSDir is the agent's {agent_data_dir}/tls. With it, an https
	// BaseURL is verified against TLSDir/ca.crt (the CA pinned at
	// enrollment) only, and TLSDir/agent.crt is presented as the client
	// certificate, read again after a renewal (see tls.go). Empty: the
	// system roots and no client certificate.
	TLSDir string
	// Proxy selects a proxy per request (default http.ProxyFromEnvironment).
	Proxy func(*http.Request) (*url.URL, error)
	// Logger receives progress and every retry (default: discard).
	Logger *slog.Logger
	// ProgressBar, when set, receives a one-line progress bar redrawn with
	// '\r' (give os.Stderr when it is a terminal).
	ProgressBar io.Writer
	// Rand is the jitter source (default: randomly seeded).
	Rand *rand.Rand
	// DownloadRateLimit caps downloads in bytes per second (config
	// agent.download_rate_limit; throttle.go). Zero: unlimited.
	DownloadRateLimit int64

	// Failed reports whether this agent recorded a cached entry as failed
	// (for example a node upgrade to it failed). NewestVerified, Offline
	// and the OnUnreachable report never choose such an entry. Default:
	// nothing is recorded as failed.
	Failed func(cache.Entry) bool
	// Keys are the release public keys (config security.release_public_keys).
	// With keys, every binary must carry a valid release signature by one of
	// them that names what was asked for, checked before it is made
	// executable and again from the cache before every use (verify.go).
	// Empty: no signature checks.
	Keys release.Keyring
	// AllowUnsigned (security.require_signatures = false) accepts a binary
	// the master publishes no signature for; a signature served is checked.
	AllowUnsigned bool
	// Ratchet, when set, is the agent's record of the highest version of
	// each artifact it ever committed (a node started or upgraded on it, a
	// self-update committed; the agent records it, not the Fetcher):
	// "latest" resolving below it is refused (ratchet.ErrRollback, a
	// rollback attack); an explicit lower version is allowed and logged as a
	// downgrade.
	Ratchet *ratchet.Book

	// OnUnreachable, when set, is called at most once per Ensure, as soon
	// as a request to the master fails because the master cannot be reached
	// (connection error, 502, 503, 504) while Ensure goes on retrying. It
	// gets the newest verified cached entry for this platform (nil when
	// there is none) and the error. Ensure also logs a warning then.
	OnUnreachable func(cached *cache.Entry, err error)
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.Artifact == "" {
		o.Artifact = "storage-server"
	}
	if o.Attempts == 0 {
		o.Attempts = 5
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	def(&o.BackoffMin, time.Second)
	def(&o.BackoffMax, 60*time.Second)
	def(&o.ConnectTimeout, 10*time.Second)
	def(&o.ResponseHeaderTimeout, 30*time.Second)
	def(&o.StallTimeout, 30*time.Second)
	def(&o.Timeout, 30*time.Minute)
	if o.MaxResumes == 0 {
		o.MaxResumes = 3
	}
	if o.MaxSize == 0 {
		o.MaxSize = 2 << 30
	}
	if o.Keep == 0 {
		o.Keep = 3
	}
	if o.Proxy == nil {
		o.Proxy = http.ProxyFromEnvironment
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
}

// Validate reports every invalid option at once (after defaults).
func (o Options) Validate() error {
	var errs []error
	if o.BaseURL == "" {
		errs = append(errs, errors.New("fetch: BaseURL is required"))
	} else if _, err := parseBaseURLs(o.BaseURL); err != nil {
		errs = append(errs, err)
	}
	if o.CacheDir == "" {
		errs = append(errs, errors.New("fetch: CacheDir is required"))
	}
	if o.Platform != "" && !platform.ValidPlatform(o.Platform) {
		errs = append(errs, fmt.Errorf("fetch: platform %q: %w (accepted: %s)", o.Platform, ErrUnsupportedPlatform, strings.Join(platform.Platforms(), ", ")))
	}
	if o.Arch != "" && !platform.ValidArch(o.Arch) {
		errs = append(errs, fmt.Errorf("fetch: arch %q: %w (accepted: %s)", o.Arch, ErrUnsupportedPlatform, strings.Join(platform.Arches(), ", ")))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BackoffMin", o.BackoffMin}, {"BackoffMax", o.BackoffMax}, {"ConnectTimeout", o.ConnectTimeout},
		{"ResponseHeaderTimeout", o.ResponseHeaderTimeout}, {"StallTimeout", o.StallTimeout}, {"Timeout", o.Timeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("fetch: %s must not be negative", d.name))
		}
	}
	if o.BackoffMin > o.BackoffMax {
		errs = append(errs, errors.New("fetch: BackoffMin must not exceed BackoffMax"))
	}
	if o.Attempts < 0 || o.Retries < 0 || o.MaxResumes < 0 || o.Keep < 0 || o.MaxSize < 0 {
		errs = append(errs, errors.New("fetch: Attempts, Retries, MaxResumes, Keep and MaxSize must not be negative"))
	}
	return errors.Join(errs...)
}

// Fetcher resolves, downloads, verifies and caches one artifact. It is safe
// for concurrent use; fetches are serialised.
type Fetcher struct {
	opts  Options
	log   *slog.Logger
	cache *cache.Cache
	http  *retryablehttp.Client
	base  *url.URL

	randMu sync.Mutex
	mu     sync.Mutex // serialises Ensure and Prune
	buf    []byte
	// limiter paces downloads (Options.DownloadRateLimit); nil: unlimited.
	limiter *rate.Limiter
}

// New validates opts and returns a Fetcher. With Platform/Arch unset it maps
// this machine's GOOS/GOARCH; an OS or CPU the grid has no binaries for is
// ErrUnsupportedPlatform.
func New(opts Options) (*Fetcher, error) {
	if opts.Platform == "" || opts.Arch == "" {
		p, a, err := platform.Current()
		if err != nil {
			return nil, fmt.Errorf("fetch: %w: %w", ErrUnsupportedPlatform, err)
		}
		if opts.Platform == "" {
			opts.Platform = p
		}
		if opts.Arch == "" {
			opts.Arch = a
		}
	}
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	bases, _ := parseBaseURLs(opts.BaseURL)
	base := bases[0]
	c, err := cache.New(cache.Options{Dir: opts.CacheDir, Artifact: opts.Artifact, Platform: opts.Platform, Logger: opts.Logger,
		Keys: opts.Keys, AllowUnsigned: opts.AllowUnsigned})
	if err != nil {
		return nil, err
	}
	f := &Fetcher{opts: opts, log: opts.Logger, cache: c, base: base, buf: make([]byte, 1<<20), limiter: newLimiter(opts.DownloadRateLimit)}
	if f.http, err = f.newHTTPClient(bases); err != nil {
		return nil, err
	}
	return f, nil
}

// Cache returns the Fetcher's cache.
func (f *Fetcher) Cache() *cache.Cache { return f.cache }

// Platform returns the (platform, arch) the Fetcher asks for.
func (f *Fetcher) Platform() (platformName, arch string) { return f.opts.Platform, f.opts.Arch }

// Ensure returns a verified cached executable of version ("latest" or "" for
// the newest the master publishes, else an exact semantic version). An exact
// version already cached and still matching its checksum is returned without
// asking the master. Otherwise the binary is resolved, downloaded, verified
// and committed, retrying failed attempts with backoff. A corrupt cache entry
// is replaced by a fresh download.
func (f *Fetcher) Ensure(ctx context.Context, ver string) (cache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ctx, cancel := context.WithTimeoutCause(ctx, f.opts.Timeout,
		fmt.Errorf("fetch %s: overall timeout %s exceeded", f.opts.Artifact, f.opts.Timeout))
	defer cancel()

	if ver == "" {
		ver = Latest
	}
	rep := &unreachableReport{}
	ctx = context.WithValue(ctx, unreachableKey{}, rep)
	if ver != Latest {
		if _, err := semver.Parse(ver); err != nil {
			return cache.Entry{}, fmt.Errorf("fetch %s: version %q: %w", f.opts.Artifact, ver, err)
		}
		e, err := f.cache.Verified(ctx, ver)
		if err == nil {
			return e, nil
		}
		if errors.Is(err, cache.ErrCorrupt) {
			f.log.Warn("cached binary was corrupt; fetching it again", "artifact", f.opts.Artifact, "version", ver, "err", err)
		}
	}
	for attempt := 1; ; attempt++ {
		e, err := f.fetchOnce(ctx, ver)
		if err == nil {
			return e, nil
		}
		if ctx.Err() != nil {
			return cache.Entry{}, fmt.Errorf("fetch %s %s: %w (%w)", f.opts.Artifact, ver, err, context.Cause(ctx))
		}
		if errors.Is(err, ErrUnavailable) {
			f.reportUnreachable(ctx, err)
		}
		if permanent(err) || attempt >= f.opts.Attempts {
			return cache.Entry{}, fmt.Errorf("fetch %s %s for %s/%s (attempt %d of %d): %w",
				f.opts.Artifact, ver, f.opts.Platform, f.opts.Arch, attempt, f.opts.Attempts, err)
		}
		d := f.attemptDelay(attempt-1, err)
		f.log.Warn("fetch failed; retrying", "artifact", f.opts.Artifact, "version", ver,
			"attempt", attempt, "attempts", f.opts.Attempts, "retry_in", d.Round(time.Millisecond), "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return cache.Entry{}, fmt.Errorf("fetch %s %s: %w (last error: %w)", f.opts.Artifact, ver, context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// unreachableKey carries an Ensure's *unreachableReport in its context, so
// that the transport's CheckRetry can report the first failed request.
type unreachableKey struct{}

type unreachableReport struct{ once sync.Once }

// reportUnreachable tells, once per Ensure, that the master cannot be reached
// and which verified cached version could be used meanwhile.
func (f *Fetcher) reportUnreachable(ctx context.Context, err error) {
	rep, ok := ctx.Value(unreachableKey{}).(*unreachableReport)
	if !ok {
		return
	}
	rep.once.Do(func() {
		var cached *cache.Entry
		if e, cerr := f.newestVerified(ctx); cerr == nil {
			cached = &e
			f.log.Warn("the master is unreachable; still retrying. A verified cached binary exists",
				"artifact", f.opts.Artifact, "master", f.opts.BaseURL, "cached_version", e.Version, "cached_path", e.Path, "err", err)
		} else {
			f.log.Warn("the master is unreachable; still retrying. No verified cached binary for this platform",
				"artifact", f.opts.Artifact, "master", f.opts.BaseURL, "platform", f.opts.Platform, "arch", f.opts.Arch, "err", err)
		}
		if f.opts.OnUnreachable != nil {
			f.opts.OnUnreachable(cached, err)
		}
	})
}

// permanent reports whether retrying an attempt cannot help.
func permanent(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnsupportedPlatform) || errors.Is(err, ErrSignature) || errors.Is(err, ratchet.ErrRollback) ||
		errors.Is(err, ErrCacheDir) || errors.Is(err, errClient) || errors.Is(err, semver.ErrInvalid)
}

func (f *Fetcher) fetchOnce(ctx context.Context, ver string) (cache.Entry, error) {
	info, err := f.Resolve(ctx, ver)
	if err != nil {
		return cache.Entry{}, err
	}
	if err := f.checkRatchet(ver, info.Version); err != nil {
		return cache.Entry{}, err
	}
	if ver == Latest {
		if e, err := f.cache.Verified(ctx, info.Version); err == nil {
			if e.Checksum == info.Checksum {
				return e, nil
			}
			f.log.Warn("the master now publishes a different binary under this version; replacing the cached copy",
				"artifact", f.opts.Artifact, "version", info.Version, "cached_sha256", e.Checksum, "master_sha256", info.Checksum)
		}
	} else if e, err := f.cache.Lookup(info.Version); err == nil && e.Checksum != info.Checksum {
		f.log.Warn("the master now publishes a different binary under this version; replacing the cached copy",
			"artifact", f.opts.Artifact, "version", info.Version, "cached_sha256", e.Checksum, "master_sha256", info.Checksum)
	}
	if err := f.cache.Prepare(info.Version); err != nil {
		if isNoSpace(err) {
			return cache.Entry{}, localErr("create", f.cache.Dir(info.Version), err)
		}
		return cache.Entry{}, fmt.Errorf("%w: %w", ErrCacheDir, err)
	}
	presig, err := f.precheckSignature(ctx, info)
	if err != nil {
		return cache.Entry{}, err
	}
	ss := f.newStreamSig(info, presig)
	defer ss.close()
	source := f.binaryURL(info.Path)
	sum, err := f.download(ctx, info, source, ss)
	if err != nil {
		return cache.Entry{}, err
	}
	if sum != info.Checksum {
		f.discard(info.Version)
		f.log.Error("downloaded binary does not match the master's checksum; deleted it, will retry",
			"artifact", f.opts.Artifact, "version", info.Version, "url", source,
			"want_sha256", info.Checksum, "got_sha256", sum)
		return cache.Entry{}, fmt.Errorf("%s: sha256 %s, master's metadata says %s: %w", source, sum, info.Checksum, ErrChecksum)
	}
	valid, expected, err := f.VerifyRemote(ctx, info.Version, sum)
	if err != nil {
		return cache.Entry{}, err // the complete partial is kept and re-hashed next attempt
	}
	if !valid {
		f.discard(info.Version)
		f.log.Error("the master's verify endpoint rejected the downloaded binary; deleted it, will retry",
			"artifact", f.opts.Artifact, "version", info.Version, "got_sha256", sum, "master_expects", expected)
		return cache.Entry{}, fmt.Errorf("%s: master's verify endpoint expects %s, got %s: %w", source, expected, sum, ErrChecksum)
	}
	sig, keyID, err := f.verifySignature(ctx, info, sum, presig, ss)
	if err != nil {
		return cache.Entry{}, err
	}
	e, err := f.cache.CommitSigned(cache.Entry{
		Version: info.Version, Platform: info.Platform, Arch: info.Arch, Checksum: sum, Size: info.SizeBytes,
		SourceURL: source, FetchedAt: time.Now().UTC(), SignedBy: keyID,
	}, sig)
	if err != nil {
		f.discard(info.Version)
		return cache.Entry{}, localErr("commit", f.cache.Path(info.Version), err)
	}
	f.log.Info("binary verified and cached", "artifact", f.opts.Artifact, "version", e.Version,
		"sha256", e.Checksum, "size", e.Size, "path", e.Path)
	return e, nil
}

// checkRatchet refuses a "latest" that resolved below the highest version
// this agent ever committed, and logs an explicit downgrade.
func (f *Fetcher) checkRatchet(asked, resolved string) error {
	if f.opts.Ratchet == nil {
		return nil
	}
	if asked == Latest {
		if err := f.opts.Ratchet.Check(f.opts.Artifact, resolved); err != nil {
			f.log.Error("refused: possible rollback attack", "artifact", f.opts.Artifact, "latest", resolved, "err", err)
			return err
		}
		return nil
	}
	hi, err := f.opts.Ratchet.Highest(f.opts.Artifact)
	if err != nil {
		return err
	}
	if hi != "" && semver.Compare(resolved, hi) < 0 {
		f.log.Warn("downgrade: an explicit version below the highest this agent committed was asked for; allowed",
			"event", "downgrade", "artifact", f.opts.Artifact, "version", resolved, "highest_committed", hi)
	}
	return nil
}

// discard removes a version's partial download and its state.
func (f *Fetcher) discard(version string) {
	if err := f.cache.DiscardPartial(version); err != nil {
		f.log.Warn("remove partial download", "path", f.cache.PartialPath(version), "err", err)
	}
}

// VerifyCached re-hashes a cached version against its recorded checksum (see
// cache.Cache.Verified); call it before every start of the binary.
func (f *Fetcher) VerifyCached(ctx context.Context, ver string) (cache.Entry, error) {
	return f.cache.Verified(ctx, ver)
}

// NewestVerified returns the newest cached version for the Fetcher's
// platform and arch that still verifies (re-hashed) and that Options.Failed
// does not reject; use it when the master is unreachable at start.
func (f *Fetcher) NewestVerified(ctx context.Context) (cache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.newestVerified(ctx)
}

func (f *Fetcher) newestVerified(ctx context.Context) (cache.Entry, error) {
	e, err := f.cache.NewestVerifiedFunc(ctx, f.usable)
	if err != nil {
		return cache.Entry{}, fmt.Errorf("no verified %s for %s/%s in %s: %w", f.opts.Artifact, f.opts.Platform, f.opts.Arch, f.cache.Root(), err)
	}
	return e, nil
}

// usable: built for this platform and not recorded as failed.
func (f *Fetcher) usable(e cache.Entry) bool {
	return e.Platform == f.opts.Platform && e.Arch == f.opts.Arch && (f.opts.Failed == nil || !f.opts.Failed(e))
}

// Offline returns a cached executable without asking the master: for
// "latest" (or "") the newest verified one for this platform (see
// NewestVerified), else exactly ver. It is re-hashed against the checksum
// recorded when it was verified with the master; one that Options.Failed
// rejects is never returned. Nothing cached is cache.ErrNotCached.
func (f *Fetcher) Offline(ctx context.Context, ver string) (cache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ver == "" || ver == Latest {
		e, err := f.newestVerified(ctx)
		if err != nil {
			return cache.Entry{}, fmt.Errorf("offline: %w (fetch one while the master is reachable)", err)
		}
		return e, nil
	}
	if _, err := semver.Parse(ver); err != nil {
		return cache.Entry{}, fmt.Errorf("offline %s: version %q: %w", f.opts.Artifact, ver, err)
	}
	e, err := f.cache.Verified(ctx, ver)
	if err != nil {
		return cache.Entry{}, fmt.Errorf("offline: %w (fetch it while the master is reachable)", err)
	}
	if e.Platform != f.opts.Platform || e.Arch != f.opts.Arch {
		return cache.Entry{}, fmt.Errorf("offline: cached %s %s is for %s/%s, not %s/%s: %w",
			f.opts.Artifact, ver, e.Platform, e.Arch, f.opts.Platform, f.opts.Arch, cache.ErrNotCached)
	}
	if f.opts.Failed != nil && f.opts.Failed(e) {
		return cache.Entry{}, fmt.Errorf("offline: cached %s %s failed on this agent before: %w", f.opts.Artifact, ver, ErrRecordedFailed)
	}
	return e, nil
}

// Prune keeps the Options.Keep newest cached versions and those in inUse,
// removing the rest. It returns the removed versions.
func (f *Fetcher) Prune(inUse ...string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cache.Prune(f.opts.Keep, func(v string) bool {
		for _, u := range inUse {
			if u == v {
				return true
			}
		}
		return false
	})
}

// Local checks a configured storage.binary_path and describes it: it must
// exist, be a regular file and be executable. Its checksum is computed so that
// the supervisor can record what it runs; it is not verified against anything.
func Local(ctx context.Context, path string) (cache.Entry, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return cache.Entry{}, fmt.Errorf("storage.binary_path %s does not exist (build or copy storage-server there, or leave binary_path empty to download it from the master): %w", path, ErrBinaryPath)
		}
		return cache.Entry{}, fmt.Errorf("storage.binary_path %s: %w: %w", path, ErrBinaryPath, err)
	}
	if !st.Mode().IsRegular() {
		return cache.Entry{}, fmt.Errorf("storage.binary_path %s is not a regular file: %w", path, ErrBinaryPath)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o111 == 0 {
		return cache.Entry{}, fmt.Errorf("storage.binary_path %s is not executable (run: chmod +x %s): %w", path, path, ErrBinaryPath)
	}
	fh, err := os.Open(path)
	if err != nil {
		return cache.Entry{}, fmt.Errorf("storage.binary_path %s is not readable: %w: %w", path, ErrBinaryPath, err)
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: fh})
	if err != nil {
		return cache.Entry{}, fmt.Errorf("storage.binary_path %s: %w", path, err)
	}
	p, a, _ := platform.Current()
	return cache.Entry{Artifact: "storage-server", Platform: p, Arch: a, Checksum: hex.EncodeToString(h.Sum(nil)),
		Size: n, SourceURL: "file://" + path, Path: path}, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func userAgent() string { return "sutra-agent/" + version.Version }
