// Package cache keeps verified executables of one artifact (storage-server, or
// sutra-agent for self-update) on local disk, one directory per version:
//
//	{dir}/{artifact}/{version}/{artifact}[.exe]   the verified executable (0755)
//	{dir}/{artifact}/{version}/meta.json          what it was verified against
//	{dir}/{artifact}/{version}/{artifact}.partial a download in progress (0600, never executable)
//
// Trust model: an entry is trusted only while its bytes hash to the SHA-256
// recorded in meta.json, which was written after the download matched both the
// master's metadata and the master's verify endpoint. Verified re-hashes the
// whole file before every use; a file that was changed, truncated or lost its
// metadata is deleted (ErrCorrupt) so that the caller fetches it again, and is
// never returned. Nothing here talks to the network; package fetch fills the
// cache. Only Commit places a file at the executable path, by an atomic rename
// of an already verified file.
//
// One process should own a cache directory at a time; the Fetcher serialises
// its own use of it.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/semver"
)

// Errors callers act on.
var (
	// ErrNotCached: no entry for the version (or no entry at all).
	ErrNotCached = errors.New("not in cache")
	// ErrCorrupt: an entry did not match its recorded checksum and was removed.
	ErrCorrupt = errors.New("cached binary is corrupt")
)

// MetaFile is the name of an entry's metadata file.
const MetaFile = "meta.json"

// Entry describes one verified executable.
type Entry struct {
	Artifact  string    `json:"artifact"`
	Version   string    `json:"version"`
	Platform  string    `json:"platform"`
	Arch      string    `json:"arch"`
	Checksum  string    `json:"checksum"` // lower-case hex SHA-256
	Size      int64     `json:"size_bytes"`
	SourceURL string    `json:"source_url"`
	FetchedAt time.Time `json:"fetched_at"`
	// Path is the executable; not stored, filled on read.
	Path string `json:"-"`
}

// Cache is one artifact's cache directory.
type Cache struct {
	root     string // {dir}/{artifact}
	artifact string
	exe      string // {artifact}{.exe}
	log      *slog.Logger
}

// Options configures New.
type Options struct {
	// Dir is the cache root (config agent.cache_dir). Required.
	Dir string
	// Artifact is the binary's name (default "storage-server").
	Artifact string
	// Platform decides the executable suffix (default: this machine's).
	Platform string
	// Logger receives removals of corrupt or pruned entries (default: discard).
	Logger *slog.Logger
}

// New returns the cache for opts.Artifact under opts.Dir. It creates nothing.
func New(opts Options) (*Cache, error) {
	var errs []error
	if opts.Dir == "" {
		errs = append(errs, errors.New("cache: Dir is required"))
	}
	if opts.Artifact == "" {
		opts.Artifact = "storage-server"
	}
	if !validName(opts.Artifact) {
		errs = append(errs, fmt.Errorf("cache: invalid artifact name %q", opts.Artifact))
	}
	if opts.Platform == "" {
		p, _, err := platform.Current()
		if err != nil {
			errs = append(errs, err)
		}
		opts.Platform = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{
		root:     filepath.Join(opts.Dir, opts.Artifact),
		artifact: opts.Artifact,
		exe:      opts.Artifact + platform.ExeSuffix(opts.Platform),
		log:      opts.Logger,
	}, nil
}

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, `/\:`) && s != "." && s != ".."
}

// checkVersion refuses anything that is not a strict semantic version, so a
// version from the network can never name a path outside the cache.
func checkVersion(v string) error {
	if _, err := semver.Parse(v); err != nil {
		return fmt.Errorf("cache: version %q: %w", v, err)
	}
	return nil
}

// Root returns {dir}/{artifact}.
func (c *Cache) Root() string { return c.root }

// Dir returns the directory of a version's entry.
func (c *Cache) Dir(version string) string { return filepath.Join(c.root, version) }

// Path returns where a version's verified executable lives.
func (c *Cache) Path(version string) string { return filepath.Join(c.root, version, c.exe) }

// PartialPath returns where a version's download in progress lives.
func (c *Cache) PartialPath(version string) string {
	return filepath.Join(c.root, version, c.artifact+".partial")
}

// Prepare creates a version's directory for a download.
func (c *Cache) Prepare(version string) error {
	if err := checkVersion(version); err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dir(version), 0o755); err != nil {
		return fmt.Errorf("cache dir %s is not writable (fix its permissions, free space, or set agent.cache_dir / SUTRA_CACHE_DIR): %w", c.root, err)
	}
	return nil
}

// Commit makes the verified file at partial the executable of e.Version: it
// sets mode 0755, fsyncs, renames it into place, writes meta.json atomically
// and fsyncs the directory. The caller must have verified the file's SHA-256
// against e.Checksum; Commit trusts it.
func (c *Cache) Commit(partial string, e Entry) (Entry, error) {
	if err := checkVersion(e.Version); err != nil {
		return Entry{}, err
	}
	dir := c.Dir(e.Version)
	e.Artifact = c.artifact
	e.Checksum = strings.ToLower(e.Checksum)
	final := c.Path(e.Version)
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	if runtime.GOOS != "windows" {
		if err := f.Chmod(0o755); err != nil {
			f.Close()
			return Entry{}, fmt.Errorf("commit %s: chmod: %w", final, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return Entry{}, fmt.Errorf("commit %s: fsync: %w", final, err)
	}
	if err := f.Close(); err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	// Remove stale metadata first: an executable without metadata is never
	// trusted, metadata describing another file would be.
	if err := os.Remove(filepath.Join(dir, MetaFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	if err := os.Rename(partial, final); err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	meta, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, MetaFile), append(meta, '\n'), 0o644); err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	if err := atomicfile.SyncDir(c.root); err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	e.Path = final
	return e, nil
}

// Lookup reads a version's metadata without verifying the executable.
func (c *Cache) Lookup(version string) (Entry, error) {
	if err := checkVersion(version); err != nil {
		return Entry{}, err
	}
	data, err := os.ReadFile(filepath.Join(c.Dir(version), MetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, ErrNotCached)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s %s: read metadata: %w", c.artifact, version, err)
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil || e.Version != version || !isHexSHA256(e.Checksum) || e.Size < 0 {
		return Entry{}, fmt.Errorf("%s %s: unreadable metadata %s: %w", c.artifact, version,
			filepath.Join(c.Dir(version), MetaFile), ErrCorrupt)
	}
	e.Path = c.Path(version)
	return e, nil
}

// Verified returns a version's entry after re-hashing its executable against
// the recorded checksum. A missing entry is ErrNotCached. An entry that does
// not match (changed, truncated, no metadata) is removed and ErrCorrupt is
// returned, so the caller fetches it again.
func (c *Cache) Verified(ctx context.Context, version string) (Entry, error) {
	e, err := c.Lookup(version)
	if errors.Is(err, ErrNotCached) {
		if _, serr := os.Stat(c.Path(version)); serr == nil {
			// An executable without metadata: a crash between rename and
			// metadata write, or someone's copy. Not trusted.
			c.remove(version, "executable without metadata")
			return Entry{}, fmt.Errorf("%s %s: executable without metadata was removed: %w", c.artifact, version, ErrCorrupt)
		}
		return Entry{}, err
	}
	if errors.Is(err, ErrCorrupt) {
		c.remove(version, "unreadable metadata")
		return Entry{}, err
	}
	if err != nil {
		return Entry{}, err
	}
	sum, size, err := hashFile(ctx, e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		c.remove(version, "executable missing")
		return Entry{}, fmt.Errorf("%s %s: executable missing: %w", c.artifact, version, ErrNotCached)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, err)
	}
	if sum != e.Checksum || size != e.Size {
		c.log.Error("cached binary does not match its recorded checksum; removing it so it is fetched again",
			"artifact", c.artifact, "version", version, "path", e.Path,
			"want_sha256", e.Checksum, "got_sha256", sum, "want_size", e.Size, "got_size", size)
		c.remove(version, "checksum mismatch")
		return Entry{}, fmt.Errorf("%s %s at %s: sha256 %s (%d bytes), recorded %s (%d bytes): %w",
			c.artifact, version, e.Path, sum, size, e.Checksum, e.Size, ErrCorrupt)
	}
	if runtime.GOOS != "windows" {
		if st, err := os.Stat(e.Path); err == nil && st.Mode().Perm()&0o111 == 0 {
			if err := os.Chmod(e.Path, 0o755); err != nil {
				return Entry{}, fmt.Errorf("%s %s: restore exec bit: %w", c.artifact, version, err)
			}
		}
	}
	return e, nil
}

// remove deletes a version's executable and metadata (keeping any partial
// download). Errors are logged: on Windows a running executable cannot be removed.
func (c *Cache) remove(version, why string) {
	for _, p := range []string{filepath.Join(c.Dir(version), MetaFile), c.Path(version)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("remove cache entry", "path", p, "reason", why, "err", err)
		}
	}
}

// Remove deletes a version's whole directory.
func (c *Cache) Remove(version string) error {
	if err := checkVersion(version); err != nil {
		return err
	}
	if err := os.RemoveAll(c.Dir(version)); err != nil {
		return fmt.Errorf("remove %s %s: %w", c.artifact, version, err)
	}
	return nil
}

// Versions lists the versions that have a directory in the cache (complete
// or not), newest first by semantic version. Other names are ignored.
func (c *Cache) Versions() ([]string, error) {
	ents, err := os.ReadDir(c.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list cache: %w", err)
	}
	var vs []string
	for _, de := range ents {
		if de.IsDir() && checkVersion(de.Name()) == nil {
			vs = append(vs, de.Name())
		}
	}
	slices.SortFunc(vs, func(a, b string) int { return semver.Compare(b, a) })
	return vs, nil
}

// NewestVerified returns the newest entry that passes Verified; corrupt
// entries met on the way are removed. It is what an agent runs when the
// master is unreachable at start. No entry is ErrNotCached.
func (c *Cache) NewestVerified(ctx context.Context) (Entry, error) {
	vs, err := c.Versions()
	if err != nil {
		return Entry{}, err
	}
	for _, v := range vs {
		e, err := c.Verified(ctx, v)
		if err == nil {
			return e, nil
		}
		if ctx.Err() != nil {
			return Entry{}, ctx.Err()
		}
	}
	return Entry{}, fmt.Errorf("no verified %s in %s: %w", c.artifact, c.root, ErrNotCached)
}

// Prune keeps the keep newest complete entries and every version for which
// inUse returns true, and removes every other version directory (including
// abandoned partial downloads). It returns the removed versions.
func (c *Cache) Prune(keep int, inUse func(version string) bool) ([]string, error) {
	vs, err := c.Versions()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	kept := 0
	for _, v := range vs {
		complete := false
		if _, err := c.Lookup(v); err == nil {
			complete = true
		}
		if complete && kept < keep {
			kept++
			continue
		}
		if inUse != nil && inUse(v) {
			continue
		}
		if err := c.Remove(v); err != nil {
			errs = append(errs, err)
			continue
		}
		c.log.Info("pruned cached binary", "artifact", c.artifact, "version", v)
		removed = append(removed, v)
	}
	return removed, errors.Join(errs...)
}

// hashFile returns the SHA-256 and size of a file, honouring ctx between chunks.
func hashFile(ctx context.Context, path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return "", n, err
		}
		m, err := f.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", n, fmt.Errorf("hash %s: %w", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
