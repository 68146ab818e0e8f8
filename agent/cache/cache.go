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
// File system trust: every file operation goes through an os.Root opened on
// {dir}/{artifact} and then on the version's directory, so no path, symlink or
// ".." can lead outside the version directory; directories are created 0700.
// On Unix a cache directory (or {artifact} or version directory) that is
// group- or world-writable or owned by another user is refused (ErrUnsafeDir):
// whoever can write there could swap the binaries the agent runs. A partial
// download is opened only if it is a regular file with a single link (never
// through a symlink or hard link); otherwise it is removed (the link, not its
// target) and created anew with O_CREATE|O_EXCL|O_NOFOLLOW.
//
// One process should own a cache directory at a time; the Fetcher serialises
// its own use of it.
package cache

import (
	"context"
	"crypto/rand"
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

	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
	"github.com/sutragrid/sutra/internal/semver"
)

// Errors callers act on.
var (
	// ErrNotCached: no entry for the version (or no entry at all).
	ErrNotCached = errors.New("not in cache")
	// ErrCorrupt: an entry did not match its recorded checksum and was removed.
	ErrCorrupt = errors.New("cached binary is corrupt")
	// ErrUnsafeDir: a cache directory is writable by other users, owned by
	// another user, or not a directory; nothing in it is used or written.
	ErrUnsafeDir = errors.New("cache dir is not private to the agent")
)

// MetaFile is the name of an entry's metadata file.
const MetaFile = "meta.json"

// PartialStateSuffix names the file beside a partial download
// ({artifact}.partial.json) that records what the partial is a prefix of.
const PartialStateSuffix = ".json"

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
	// SignedBy is the id of the release key whose signature verified the
	// executable (empty when unsigned); the signature is kept beside it.
	SignedBy string `json:"signed_by,omitempty"`
	// Path is the executable; not stored, filled on read.
	Path string `json:"-"`
}

// Cache is one artifact's cache directory.
type Cache struct {
	dir      string // the cache root given in Options.Dir
	root     string // {dir}/{artifact}
	artifact string
	exe      string // {artifact}{.exe}
	partial  string // {artifact}.partial
	log      *slog.Logger

	keys          release.Keyring
	allowUnsigned bool
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
	// Keys, when it holds keys, makes every entry a signed one: CommitSigned
	// keeps the release signature ({artifact}.minisig) beside the
	// executable and Verified checks it (internal/release) instead of the
	// bare checksum, before every use. See signed.go.
	Keys release.Keyring
	// AllowUnsigned (security.require_signatures = false) accepts entries
	// without a signature file; a signature present is still checked.
	AllowUnsigned bool
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
		dir:      opts.Dir,
		root:     filepath.Join(opts.Dir, opts.Artifact),
		artifact: opts.Artifact,
		exe:      opts.Artifact + platform.ExeSuffix(opts.Platform),
		partial:  opts.Artifact + ".partial",
		log:      opts.Logger,

		keys:          opts.Keys,
		allowUnsigned: opts.AllowUnsigned,
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
	return filepath.Join(c.root, version, c.partial)
}

// writableHint is appended to errors about the cache directory.
const writableHint = "fix its permissions, free space, or set agent.cache_dir / SUTRA_CACHE_DIR"

// openArtifact opens {dir}/{artifact} as an os.Root after checking that
// {dir} and {dir}/{artifact} are private directories. With create, missing
// directories are made (0700); without, a missing one is fs.ErrNotExist.
func (c *Cache) openArtifact(create bool) (*os.Root, error) {
	if create {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, fmt.Errorf("cache dir %s is not writable (%s): %w", c.dir, writableHint, err)
		}
	}
	dr, err := os.OpenRoot(c.dir)
	if err != nil {
		return nil, fmt.Errorf("open cache dir %s: %w", c.dir, err)
	}
	defer dr.Close()
	fi, err := dr.Stat(".")
	if err != nil {
		return nil, fmt.Errorf("open cache dir %s: %w", c.dir, err)
	}
	if err := checkPrivate(c.dir, fi); err != nil {
		return nil, err
	}
	if create {
		if err := dr.Mkdir(c.artifact, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("cache dir %s is not writable (%s): %w", c.root, writableHint, err)
		}
	}
	return openSubdir(dr, c.artifact, c.root)
}

// openSubdir opens name inside r as a Root, refusing anything that is not a
// private directory of its own (a symlink, a file, another user's directory).
func openSubdir(r *os.Root, name, path string) (*os.Root, error) {
	lfi, err := r.Lstat(name)
	if err != nil {
		return nil, fmt.Errorf("cache dir %s: %w", path, err)
	}
	if !lfi.IsDir() {
		return nil, fmt.Errorf("%w: %s is a %s, not a directory (remove it, or set agent.cache_dir / SUTRA_CACHE_DIR to another directory)",
			ErrUnsafeDir, path, kind(lfi.Mode()))
	}
	if err := checkPrivate(path, lfi); err != nil {
		return nil, err
	}
	sub, err := r.OpenRoot(name)
	if err != nil {
		return nil, fmt.Errorf("cache dir %s: %w", path, err)
	}
	// Replaced between the check and the open: refuse.
	if fi, err := sub.Stat("."); err != nil || !os.SameFile(lfi, fi) {
		sub.Close()
		return nil, fmt.Errorf("%w: %s changed while it was being opened", ErrUnsafeDir, path)
	}
	return sub, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "file"
	default:
		return "special file"
	}
}

// openVersion opens a version's directory as a Root.
func (c *Cache) openVersion(version string) (*os.Root, error) {
	if err := checkVersion(version); err != nil {
		return nil, err
	}
	ar, err := c.openArtifact(false)
	if err != nil {
		return nil, err
	}
	defer ar.Close()
	return openSubdir(ar, version, c.Dir(version))
}

// Prepare creates a version's directory (0700) for a download. A symlink in
// its place is removed (the link, not its target).
func (c *Cache) Prepare(version string) error {
	if err := checkVersion(version); err != nil {
		return err
	}
	ar, err := c.openArtifact(true)
	if err != nil {
		return err
	}
	defer ar.Close()
	if fi, err := ar.Lstat(version); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		c.log.Warn("removing a symlink planted in the cache in place of a version directory",
			"path", c.Dir(version))
		if err := ar.Remove(version); err != nil {
			return fmt.Errorf("cache dir %s: remove symlink: %w", c.Dir(version), err)
		}
	}
	if err := ar.Mkdir(version, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cache dir %s is not writable (%s): %w", c.root, writableHint, err)
	}
	vr, err := openSubdir(ar, version, c.Dir(version))
	if err != nil {
		return fmt.Errorf("%w (%s)", err, writableHint)
	}
	return vr.Close()
}

// openRegular opens name in r only if it is a regular file with a single
// link, reached without following a symlink (checked before and after the
// open, so a swap in between is noticed).
func openRegular(r *os.Root, name string, flag int) (*os.File, error) {
	lfi, err := r.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !lfi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s: %w", name, kind(lfi.Mode()), errNotRegular)
	}
	f, err := r.OpenFile(name, flag|noFollow, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !os.SameFile(lfi, fi) || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s changed while it was being opened: %w", name, errNotRegular)
	}
	if n := linkCount(fi); n > 1 {
		f.Close()
		return nil, fmt.Errorf("%s has %d hard links: %w", name, n, errNotRegular)
	}
	return f, nil
}

var errNotRegular = errors.New("not a regular file of its own")

// OpenPartial opens the partial download of a version for reading and
// writing. With resume, an existing partial is kept if it is a regular file
// with a single link; anything else at its path (a symlink, a hard link, a
// directory) is removed, not followed, and an empty partial is created with
// O_CREATE|O_EXCL (0600). Call Prepare first.
func (c *Cache) OpenPartial(version string, resume bool) (*os.File, error) {
	vr, err := c.openVersion(version)
	if err != nil {
		return nil, err
	}
	defer vr.Close()
	if resume {
		f, err := openRegular(vr, c.partial, os.O_RDWR)
		if err == nil {
			return f, nil
		}
		if errors.Is(err, errNotRegular) {
			c.log.Warn("partial download is not a regular file of its own; replacing it", "path", c.PartialPath(version), "err", err)
		}
	}
	if fi, err := vr.Lstat(c.partial); err == nil && (!fi.Mode().IsRegular() || linkCount(fi) > 1) {
		c.log.Warn("a partial download path holds a link or other non-regular file (planted?); removing the link, not its target",
			"path", c.PartialPath(version), "type", kind(fi.Mode()), "links", linkCount(fi))
	}
	if err := vr.Remove(c.partial); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if err := vr.RemoveAll(c.partial); err != nil {
			return nil, fmt.Errorf("remove stale partial %s: %w", c.PartialPath(version), err)
		}
	}
	f, err := vr.OpenFile(c.partial, os.O_RDWR|os.O_CREATE|os.O_EXCL|noFollow, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", c.PartialPath(version), err)
	}
	return f, nil
}

// ReadPartialState reads the small file beside a version's partial download.
func (c *Cache) ReadPartialState(version string) ([]byte, error) {
	vr, err := c.openVersion(version)
	if err != nil {
		return nil, err
	}
	defer vr.Close()
	f, err := openRegular(vr, c.partial+PartialStateSuffix, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// WritePartialState replaces the file beside a version's partial download
// atomically.
func (c *Cache) WritePartialState(version string, data []byte) error {
	vr, err := c.openVersion(version)
	if err != nil {
		return err
	}
	defer vr.Close()
	return writeAtomic(vr, c.partial+PartialStateSuffix, data, 0o600)
}

// DiscardPartial removes a version's partial download and its state file
// (links, never their targets). A missing one is not an error.
func (c *Cache) DiscardPartial(version string) error {
	vr, err := c.openVersion(version)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer vr.Close()
	var errs []error
	for _, name := range []string{c.partial, c.partial + PartialStateSuffix} {
		if err := vr.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Join(c.Dir(version), name), err))
		}
	}
	return errors.Join(errs...)
}

// writeAtomic writes name in r through a temporary file created with O_EXCL,
// fsynced and renamed over name (a symlink at name is replaced, not followed),
// then fsyncs the directory.
func writeAtomic(r *os.Root, name string, data []byte, perm fs.FileMode) (err error) {
	tmp := "." + name + "." + rand.Text()[:10] + ".tmp"
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			r.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", name, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = r.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncRoot(r)
}

// syncRoot fsyncs a Root's directory (a no-op on Windows).
func syncRoot(r *os.Root) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := r.Open(".")
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", r.Name(), err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", r.Name(), err)
	}
	return nil
}

// Commit makes the verified partial download of e.Version its executable: it
// sets mode 0755, fsyncs, renames it into place, writes meta.json atomically,
// removes the partial's state file and fsyncs the directory. The caller must
// have verified the file's SHA-256 against e.Checksum; Commit trusts it.
func (c *Cache) Commit(e Entry) (Entry, error) { return c.commit(e, nil) }

func (c *Cache) commit(e Entry, sig []byte) (Entry, error) {
	if err := checkVersion(e.Version); err != nil {
		return Entry{}, err
	}
	e.Artifact = c.artifact
	e.Checksum = strings.ToLower(e.Checksum)
	final := c.Path(e.Version)
	vr, err := c.openVersion(e.Version)
	if err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	defer vr.Close()
	f, err := openRegular(vr, c.partial, os.O_RDWR)
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
	if err := vr.Remove(MetaFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	// The signature goes in before the executable, so that a signed
	// entry never lacks it; an unsigned commit drops a stale one.
	if sig != nil {
		err = writeAtomic(vr, c.sig(), sig, 0o644)
	} else if err = vr.Remove(c.sig()); errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	// rename(2) replaces whatever is at the final name (a symlink included)
	// instead of writing through it.
	if err := vr.Rename(c.partial, c.exe); err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	meta, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	if err := writeAtomic(vr, MetaFile, append(meta, '\n'), 0o644); err != nil {
		return Entry{}, fmt.Errorf("commit %s: %w", final, err)
	}
	if err := vr.Remove(c.partial + PartialStateSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("remove partial download state", "path", filepath.Join(c.Dir(e.Version), c.partial+PartialStateSuffix), "err", err)
	}
	e.Path = final
	return e, nil
}

// Lookup reads a version's metadata without verifying the executable.
func (c *Cache) Lookup(version string) (Entry, error) {
	vr, err := c.openVersion(version)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, ErrNotCached)
	}
	if err != nil {
		return Entry{}, err
	}
	defer vr.Close()
	return c.lookup(vr, version)
}

func (c *Cache) lookup(vr *os.Root, version string) (Entry, error) {
	f, err := openRegular(vr, MetaFile, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, ErrNotCached)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s %s: read metadata: %w", c.artifact, version, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	f.Close()
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
// not match (changed, truncated, no metadata, not a regular file) is removed
// and ErrCorrupt is returned, so the caller fetches it again.
func (c *Cache) Verified(ctx context.Context, version string) (Entry, error) {
	vr, err := c.openVersion(version)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, ErrNotCached)
	}
	if err != nil {
		return Entry{}, err
	}
	defer vr.Close()
	e, err := c.lookup(vr, version)
	if errors.Is(err, ErrNotCached) {
		if _, serr := vr.Lstat(c.exe); serr == nil {
			// An executable without metadata: a crash between rename and
			// metadata write, or someone's copy. Not trusted.
			c.remove(vr, version, "executable without metadata")
			return Entry{}, fmt.Errorf("%s %s: executable without metadata was removed: %w", c.artifact, version, ErrCorrupt)
		}
		return Entry{}, err
	}
	if errors.Is(err, ErrCorrupt) || errors.Is(err, errNotRegular) {
		c.remove(vr, version, "unreadable metadata")
		return Entry{}, fmt.Errorf("%w: %w", err, ErrCorrupt)
	}
	if err != nil {
		return Entry{}, err
	}
	f, err := openRegular(vr, c.exe, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		c.remove(vr, version, "executable missing")
		return Entry{}, fmt.Errorf("%s %s: executable missing: %w", c.artifact, version, ErrNotCached)
	}
	if errors.Is(err, errNotRegular) {
		c.log.Error("cached executable is not a regular file of its own; removing it so it is fetched again",
			"artifact", c.artifact, "version", version, "path", e.Path, "err", err)
		c.remove(vr, version, "not a regular file")
		return Entry{}, fmt.Errorf("%s %s at %s: %w: %w", c.artifact, version, e.Path, err, ErrCorrupt)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, err)
	}
	if c.signed(vr) {
		err := c.verifySignature(ctx, vr, f, e)
		if err == nil {
			err = restoreExec(f, c.artifact, version)
			f.Close()
			if err != nil {
				return Entry{}, err
			}
			return e, nil
		}
		f.Close() // before removing it (Windows)
		if ctx.Err() != nil {
			return Entry{}, ctx.Err()
		}
		if release.ReasonOf(err) == "" {
			return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, err)
		}
		c.log.Error("cached binary fails its release signature check; removing it so it is fetched again",
			"artifact", c.artifact, "version", version, "path", e.Path, "reason", string(release.ReasonOf(err)), "err", err)
		c.remove(vr, version, "signature "+string(release.ReasonOf(err)))
		return Entry{}, fmt.Errorf("%s %s at %s: %w: %w", c.artifact, version, e.Path, err, ErrCorrupt)
	}
	sum, size, err := hashFile(ctx, f)
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("%s %s: %w", c.artifact, version, err)
	}
	if sum != e.Checksum || size != e.Size {
		f.Close() // before removing it (Windows)
		c.log.Error("cached binary does not match its recorded checksum; removing it so it is fetched again",
			"artifact", c.artifact, "version", version, "path", e.Path,
			"want_sha256", e.Checksum, "got_sha256", sum, "want_size", e.Size, "got_size", size)
		c.remove(vr, version, "checksum mismatch")
		return Entry{}, fmt.Errorf("%s %s at %s: sha256 %s (%d bytes), recorded %s (%d bytes): %w",
			c.artifact, version, e.Path, sum, size, e.Checksum, e.Size, ErrCorrupt)
	}
	err = restoreExec(f, c.artifact, version)
	f.Close()
	if err != nil {
		return Entry{}, err
	}
	return e, nil
}

// restoreExec sets the executable bits of a verified file that lost them.
func restoreExec(f *os.File, artifact, version string) error {
	if runtime.GOOS != "windows" {
		if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o111 == 0 {
			if err := f.Chmod(0o755); err != nil {
				return fmt.Errorf("%s %s: restore exec bit: %w", artifact, version, err)
			}
		}
	}
	return nil
}

// remove deletes a version's executable and metadata (keeping any partial
// download). Errors are logged: on Windows a running executable cannot be removed.
func (c *Cache) remove(vr *os.Root, version, why string) {
	for _, name := range []string{MetaFile, c.exe, c.sig()} {
		if err := vr.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("remove cache entry", "path", filepath.Join(c.Dir(version), name), "reason", why, "err", err)
		}
	}
}

// Remove deletes a version's whole directory (a symlink in its place is
// removed, not followed).
func (c *Cache) Remove(version string) error {
	if err := checkVersion(version); err != nil {
		return err
	}
	ar, err := c.openArtifact(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s %s: %w", c.artifact, version, err)
	}
	defer ar.Close()
	if err := ar.RemoveAll(version); err != nil {
		return fmt.Errorf("remove %s %s: %w", c.artifact, version, err)
	}
	return nil
}

// Versions lists the versions that have a directory in the cache (complete
// or not), newest first by semantic version. Other names are ignored.
func (c *Cache) Versions() ([]string, error) {
	ar, err := c.openArtifact(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list cache: %w", err)
	}
	defer ar.Close()
	d, err := ar.Open(".")
	if err != nil {
		return nil, fmt.Errorf("list cache: %w", err)
	}
	ents, err := d.ReadDir(-1)
	d.Close()
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
	return c.NewestVerifiedFunc(ctx, nil)
}

// NewestVerifiedFunc is NewestVerified among the entries accept returns true
// for (nil accepts all); accept sees the recorded metadata before the
// executable is re-hashed.
func (c *Cache) NewestVerifiedFunc(ctx context.Context, accept func(Entry) bool) (Entry, error) {
	vs, err := c.Versions()
	if err != nil {
		return Entry{}, err
	}
	for _, v := range vs {
		if accept != nil {
			m, err := c.Lookup(v)
			if err != nil || !accept(m) {
				continue
			}
		}
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

// hashFile returns the SHA-256 and size of an open file, honouring ctx
// between chunks.
func hashFile(ctx context.Context, f *os.File) (string, int64, error) {
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
			return "", n, fmt.Errorf("hash %s: %w", f.Name(), err)
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
