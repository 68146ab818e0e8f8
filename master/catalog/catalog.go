// Package catalog keeps the master's registry of the binaries in BINARIES_DIR:
// which files are published, under which artifact, version, platform and arch,
// and their SHA-256.
//
// Trust model. The catalog trusts the local file system the operator controls
// and nothing a client says. A file is published only when its name parses
// (internal/artifact) and its content has been hashed — streaming, never held
// in memory — after its size and modification time have settled, so a file
// still being copied is never published with a half-file checksum. Checksums
// are cached in the data dir keyed by the file's identity (size, mtime, ctime,
// device, inode), so a restart re-hashes nothing unchanged and keeps
// uploaded_at, and any change to the content — even one that keeps the size
// and sets the mtime back — is re-hashed. Files are opened without blocking
// (O_NONBLOCK, then fstat): a FIFO, device or directory renamed over a binary
// is refused, never waited on. A file that cannot be opened (permissions) is
// withdrawn once, with its reason logged once, and published again when it
// can be read.
//
// Serving reads only catalog entries, opened through an os.Root on the
// directory: no path from a request is ever joined onto the directory, and a
// symlink that leaves the directory is not followed. Open compares the opened
// handle's identity with the entry's; on mismatch (the file was replaced or
// rewritten since it was hashed) it refuses with ErrChanged and re-hashes, so a
// download never carries bytes that disagree with the advertised checksum
// unless the file is rewritten in place during that very download — which no
// server can prevent without copying; the client's checksum verification
// catches it. Replacing a file by rename (the safe way) leaves in-flight
// downloads on the old inode.
//
// With several masters, a Gate (master/binpeers) admits each binary before
// it is published: one whose checksum differs from another master's file
// of the same name is kept out, with the reason logged once at error level,
// and offered again when it changes and on every rescan.
package catalog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sutragrid/sutra/internal/semver"
)

// Binary is one published file.
type Binary struct {
	Artifact   string    // storage-server | sutra-agent
	Version    string    // strict semantic version
	Platform   string    // linux | darwin | windows
	Arch       string    // x86_64 | aarch64 | arm | x86
	Filename   string    // base name in the directory, also the download name
	Size       int64     // bytes
	SHA256     string    // lower-case hex
	ModTime    time.Time // modification time of the hashed content
	UploadedAt time.Time // when the file (with this content) was first registered; stable across restarts
	Signature  string    // FILE.minisig when a signature file is beside it (see Catalog.Signature); "" when unsigned
	// SignatureKeyID is the id of the key that made Signature (upper-case
	// hex, as minisign prints it): the master parses signatures, it never
	// decides whether they are trusted.
	SignatureKeyID string

	id  fileID
	ver semver.Version
}

// SemVer returns the parsed version.
func (b Binary) SemVer() semver.Version { return b.ver }

// fileID identifies the content of a file without reading it.
// Size and mtime alone miss a rewrite in place that keeps the size and sets
// the mtime back (touch -d, rsync --times, a build that pins timestamps); the
// change time (ctime, see sysID) catches it.
type fileID struct {
	size     int64
	mtimeNS  int64
	ctimeNS  int64
	dev, ino uint64
}

func idOf(fi os.FileInfo) fileID {
	dev, ino, ctimeNS := sysID(fi)
	return fileID{size: fi.Size(), mtimeNS: fi.ModTime().UnixNano(), ctimeNS: ctimeNS, dev: dev, ino: ino}
}

type key struct{ artifact, version, platform, arch string }

func keyOf(b Binary) key { return key{b.Artifact, b.Version, b.Platform, b.Arch} }

// Errors returned by Open.
var (
	// ErrNotFound: no binary of that name is published.
	ErrNotFound = errors.New("binary not registered")
	// ErrChanged: the file changed on disk since it was hashed; it is being
	// verified again and will be back (or gone) shortly. Retry.
	ErrChanged = errors.New("binary changed on disk and is being verified again")
	// ErrHashing: the file is being hashed for the first time since start-up
	// and is published when that is done. Retry.
	ErrHashing = errors.New("binary is being hashed")
)

// EventKind says what happened to a file.
type EventKind int

// Event kinds.
const (
	Registered EventKind = iota + 1 // a binary was published (Binary is set)
	Removed                         // a published binary was withdrawn: deleted, or no longer valid
	Changed                         // a published binary changed on disk and is withdrawn until re-hashed
	Skipped                         // a file does not qualify (Reason says why)
)

func (k EventKind) String() string {
	switch k {
	case Registered:
		return "registered"
	case Removed:
		return "removed"
	case Changed:
		return "changed"
	case Skipped:
		return "skipped"
	}
	return "unknown"
}

// Event reports a change in the catalog.
type Event struct {
	Kind     EventKind
	Filename string
	Binary   Binary // for Registered, Removed, Changed
	Reason   string // for Skipped and Removed
	Hashed   bool   // for Registered: the content was hashed (false: checksum from the cache)
}

// Options configures a Catalog. The zero value of every field but Dir is useful.
type Options struct {
	// Dir is the directory of binaries (BINARIES_DIR). It is created if missing.
	Dir string
	// DataDir holds the checksum cache (CacheFile). Empty: no cache, every
	// start re-hashes and uploaded_at restarts.
	DataDir string
	// Logger receives one line per registered, removed or skipped file. Nil: discard.
	Logger *slog.Logger
	// HashWorkers bounds parallel hashing. Zero: GOMAXPROCS.
	HashWorkers int
	// Debounce is how long the watcher waits after the last event for a file
	// before looking at it. Zero: 200ms.
	Debounce time.Duration
	// Settle is how long a file's size and mtime must stay unchanged (or how
	// old its mtime must be) before it is hashed. Zero: 1s.
	Settle time.Duration
	// Rescan is the period of a full stat pass that catches changes fsnotify
	// missed (network file systems, event overflow). Zero: 1 minute; negative: never.
	Rescan time.Duration
	// NoWatch disables fsnotify; Open still re-checks files it finds changed.
	NoWatch bool
	// HashInBackground makes Open return as soon as the files the checksum
	// cache knows are published; the others are hashed in the background and
	// published one by one (Hashing counts them, WaitHashed waits for them).
	// False: Open returns once every file is hashed.
	HashInBackground bool
	// OnEvent, when set, is called for every Event, in order, from the
	// catalog's goroutines, outside its locks. It must not block for long.
	OnEvent func(Event)
	// Gate, when set, admits each binary before it is published and hears
	// of withdrawals (see Gate; SetGate installs one later). Nil: every
	// valid binary is published.
	Gate Gate
}

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("catalog: Dir (BINARIES_DIR) is required"))
	}
	if o.HashWorkers < 0 {
		errs = append(errs, fmt.Errorf("catalog: HashWorkers %d is negative", o.HashWorkers))
	}
	if o.Debounce < 0 || o.Settle < 0 {
		errs = append(errs, errors.New("catalog: Debounce and Settle must not be negative"))
	}
	return errors.Join(errs...)
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HashWorkers == 0 {
		o.HashWorkers = runtime.GOMAXPROCS(0)
	}
	if o.Debounce == 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.Rescan == 0 {
		o.Rescan = time.Minute
	}
}

// Stats counts the catalog's work since Open.
type Stats struct {
	HashedFiles int64 // files whose content was read and hashed
	HashedBytes int64 // bytes read to hash them
	CacheHits   int64 // files registered from the checksum cache without reading them
	// HashTime is the time spent reading and hashing files.
	HashTime time.Duration
}

// Catalog is the registry of published binaries. It is safe for concurrent use.
type Catalog struct {
	opts      Options
	log       *slog.Logger
	dir       string
	root      *os.Root
	cachePath string
	hashSem   chan struct{}

	mu      sync.RWMutex
	byName  map[string]Binary   // published
	byKey   map[key]string      // published: key -> filename
	stale   map[string]Binary   // were published, changed on disk, being re-verified
	known   map[string]record   // checksum cache: what was hashed, by filename
	skipped map[string]string   // filename -> reason last logged
	pending map[string]key      // start-up files not hashed yet
	sigs    map[string]sigEntry // binary filename -> its FILE.minisig, read from the directory
	hashed  chan struct{}       // closed when start-up hashing is over

	// atOpen is what Open found, counted before background hashing starts.
	atOpen OpenCounts
	// settlingAtOpen counts the binaries found at start-up that were still
	// changing (within Settle); set once in Open, before any goroutine starts.
	settlingAtOpen int

	evMu sync.Mutex // serialises OnEvent calls

	gate atomic.Pointer[Gate]

	saveMu sync.Mutex

	hashedFiles, hashedBytes, cacheHits atomic.Int64
	hashNanos                           atomic.Int64

	watcher *fsnotify.Watcher
	kick    chan string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  sync.Once
}

// Open scans opts.Dir, hashes what the cache does not know (in parallel),
// publishes every valid binary, and starts watching the directory until ctx
// ends or Close is called.
func Open(ctx context.Context, opts Options) (*Catalog, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("binaries dir %s: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create binaries dir (BINARIES_DIR) %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open binaries dir (BINARIES_DIR) %s: %w", dir, err)
	}
	c := &Catalog{
		opts: opts, log: opts.Logger, dir: dir, root: root,
		hashSem: make(chan struct{}, opts.HashWorkers),
		byName:  map[string]Binary{}, byKey: map[key]string{}, stale: map[string]Binary{},
		known: map[string]record{}, skipped: map[string]string{}, pending: map[string]key{},
		sigs:   map[string]sigEntry{},
		hashed: make(chan struct{}),
		kick:   make(chan string, 256),
	}
	if opts.Gate != nil {
		c.gate.Store(&opts.Gate)
	}
	if opts.DataDir != "" {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			root.Close()
			return nil, fmt.Errorf("create data dir (SUTRA_DATA_DIR) %s: %w", opts.DataDir, err)
		}
		c.cachePath = filepath.Join(opts.DataDir, CacheFile)
		known, err := loadCache(c.cachePath)
		if err != nil {
			c.log.Warn("checksum cache unusable; re-hashing", "path", c.cachePath, "err", err)
		}
		c.known = known
	}
	if !opts.NoWatch {
		// Watch before scanning so nothing that happens during the scan is missed.
		w, err := fsnotify.NewWatcher()
		if err == nil {
			err = w.Add(dir)
		}
		if err != nil {
			if w != nil {
				w.Close()
			}
			c.log.Warn("cannot watch the binaries dir; changes are picked up by the periodic rescan only",
				"dir", dir, "rescan", opts.Rescan, "err", err)
		} else {
			c.watcher = w
		}
	}
	jobs, later, err := c.scan()
	if err != nil {
		c.Close()
		return nil, err
	}
	c.settlingAtOpen = len(later)
	if !opts.HashInBackground {
		later = append(later, c.hashAll(ctx, jobs)...)
		close(c.hashed)
		if err := ctx.Err(); err != nil {
			c.Close()
			return nil, fmt.Errorf("scan binaries dir: %w", err)
		}
		jobs = nil
	}
	c.atOpen = OpenCounts{Registered: len(c.List("")), Hashing: len(jobs), Settling: c.settlingAtOpen}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if opts.HashInBackground {
			// The watcher starts after, so no file is hashed twice at once;
			// what happens meanwhile waits in fsnotify's queue (or the rescan).
			later = append(later, c.hashAll(wctx, jobs)...)
			close(c.hashed)
		}
		c.watch(wctx, later)
	}()
	if ctx.Done() != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			select {
			case <-ctx.Done():
				cancel()
			case <-wctx.Done():
			}
		}()
	}
	return c, nil
}

// Close stops watching and releases the directory. Open handles stay valid.
func (c *Catalog) Close() error {
	c.closed.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		if c.watcher != nil {
			c.watcher.Close()
		}
		c.root.Close()
	})
	return nil
}

// Hashing returns how many of the files found at start-up are still being
// hashed (see Options.HashInBackground).
func (c *Catalog) Hashing() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.pending)
}

// OpenCounts is what Open found in the binaries dir.
type OpenCounts struct {
	// Registered were published by Open itself: from the checksum cache, or
	// hashed by Open when it does not hash in the background.
	Registered int
	// Hashing were left to hash in the background (Options.HashInBackground).
	Hashing int
	// Settling had changed within Options.Settle (see SettlingAtOpen).
	Settling int
}

// AtOpen returns the counts of Open, taken before background hashing began,
// so that they add up however fast the hashing is.
func (c *Catalog) AtOpen() OpenCounts { return c.atOpen }

// SettlingAtOpen returns how many binaries found at start-up had changed
// within Options.Settle (still being written, or written just before): they
// are not in the start-up count; the watcher registers each once its size
// and modification time have settled.
func (c *Catalog) SettlingAtOpen() int { return c.settlingAtOpen }

// WaitHashed waits until the files found at start-up are hashed and published
// (or skipped), or ctx ends.
func (c *Catalog) WaitHashed(ctx context.Context) error {
	select {
	case <-c.hashed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Catalog) hashing(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.pending[name]
	return ok
}

// HashingFor reports whether a file of that artifact, platform and arch (and
// version, unless it is "") found at start-up is still being hashed: until it
// is, "latest" may not be the latest.
func (c *Catalog) HashingFor(artifactName, version, platformName, arch string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, k := range c.pending {
		if k.artifact == artifactName && k.platform == platformName && k.arch == arch && (version == "" || k.version == version) {
			return true
		}
	}
	return false
}

// Holding reports whether name is a binary of this directory that is not
// published right now only because it is being hashed or verified again.
func (c *Catalog) Holding(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, pending := c.pending[name]
	_, stale := c.stale[name]
	return pending || stale
}

// Dir returns the absolute path of the binaries directory.
func (c *Catalog) Dir() string { return c.dir }

// Stats returns the work counters.
func (c *Catalog) Stats() Stats {
	return Stats{HashedFiles: c.hashedFiles.Load(), HashedBytes: c.hashedBytes.Load(), CacheHits: c.cacheHits.Load(),
		HashTime: time.Duration(c.hashNanos.Load())}
}

// List returns the published binaries of an artifact ("" for all), sorted by
// artifact, platform, arch, then version descending (semver precedence).
func (c *Catalog) List(artifactName string) []Binary {
	c.mu.RLock()
	out := make([]Binary, 0, len(c.byName))
	for _, b := range c.byName {
		if artifactName == "" || b.Artifact == artifactName {
			out = append(out, b)
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b Binary) int {
		return cmp.Or(
			cmp.Compare(a.Artifact, b.Artifact),
			cmp.Compare(a.Platform, b.Platform),
			cmp.Compare(a.Arch, b.Arch),
			b.ver.Compare(a.ver),
			cmp.Compare(b.Version, a.Version),
		)
	})
	return out
}

// Lookup returns the binary of an exact version.
func (c *Catalog) Lookup(artifactName, version, platformName, arch string) (Binary, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	name, ok := c.byKey[key{artifactName, version, platformName, arch}]
	if !ok {
		return Binary{}, false
	}
	return c.byName[name], true
}

// Latest returns the highest stable version for the platform and arch, or
// the highest pre-release when there is no stable one.
func (c *Catalog) Latest(artifactName, platformName, arch string) (Binary, bool) {
	return c.LatestExcept(artifactName, platformName, arch, nil)
}

// LatestExcept is Latest among the versions skip does not exclude (nil
// excludes none): the binary server passes the yank list (master/releases).
func (c *Catalog) LatestExcept(artifactName, platformName, arch string, skip func(artifactName, version string) bool) (Binary, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var best Binary
	found := false
	for _, b := range c.byName {
		if b.Artifact != artifactName || b.Platform != platformName || b.Arch != arch {
			continue
		}
		if skip != nil && skip(b.Artifact, b.Version) {
			continue
		}
		if !found || better(b, best) {
			best, found = b, true
		}
	}
	return best, found
}

// better orders candidates for Latest: stable before pre-release, then by
// precedence, then by version string so the answer is deterministic.
func better(a, b Binary) bool {
	if a.ver.IsPrerelease() != b.ver.IsPrerelease() {
		return !a.ver.IsPrerelease()
	}
	if c := a.ver.Compare(b.ver); c != 0 {
		return c > 0
	}
	return a.Version > b.Version
}

// ByFilename returns the published binary of that file name.
func (c *Catalog) ByFilename(name string) (Binary, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	b, ok := c.byName[name]
	return b, ok
}

// Open opens a published binary for reading. The handle is the very file
// that was hashed: if the file on disk is no longer the one in the catalog,
// Open returns ErrChanged and has it verified again.
func (c *Catalog) Open(name string) (*os.File, Binary, error) {
	c.mu.RLock()
	b, ok := c.byName[name]
	_, stale := c.stale[name]
	c.mu.RUnlock()
	if !ok {
		if stale {
			return nil, Binary{}, ErrChanged
		}
		if c.hashing(name) {
			return nil, Binary{}, ErrHashing
		}
		return nil, Binary{}, ErrNotFound
	}
	f, err := openNoBlock(c.root, name)
	if err != nil {
		c.suspect(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, Binary{}, ErrNotFound
		}
		return nil, Binary{}, fmt.Errorf("%w: %w", ErrChanged, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || idOf(fi) != b.id {
		f.Close()
		c.suspect(name)
		return nil, Binary{}, ErrChanged
	}
	return f, b, nil
}

// Verify checks that an open handle still has the identity of b (for example
// after a download, to log a file rewritten in place during it).
func Verify(f *os.File, b Binary) bool {
	fi, err := f.Stat()
	return err == nil && idOf(fi) == b.id
}

// suspect withdraws a published file whose disk state disagrees with the
// catalog and asks the watcher to look at it.
func (c *Catalog) suspect(name string) {
	c.invalidate(name)
	select {
	case c.kick <- name:
	default: // the periodic rescan catches it
	}
}

// invalidate moves a published file to stale: not listed, downloads answer ErrChanged.
func (c *Catalog) invalidate(name string) {
	c.mu.Lock()
	b, ok := c.byName[name]
	if ok {
		delete(c.byName, name)
		delete(c.byKey, keyOf(b))
		c.stale[name] = b
	}
	c.mu.Unlock()
	if ok {
		c.log.Info("binary changed on disk; withdrawn until verified again", "file", name)
		c.emit(Event{Kind: Changed, Filename: name, Binary: b})
	}
}

func (c *Catalog) emit(evs ...Event) {
	if c.opts.OnEvent == nil || len(evs) == 0 {
		return
	}
	c.evMu.Lock()
	defer c.evMu.Unlock()
	for _, e := range evs {
		c.opts.OnEvent(e)
	}
}

// Changing reports whether a binary of that artifact, version, platform and
// arch was published and is being verified again after a change on disk.
func (c *Catalog) Changing(artifactName, version, platformName, arch string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, b := range c.stale {
		if b.Artifact == artifactName && b.Version == version && b.Platform == platformName && b.Arch == arch {
			return true
		}
	}
	return false
}
