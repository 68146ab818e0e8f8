package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sutragrid/sutra/internal/artifact"
	"github.com/sutragrid/sutra/internal/semver"
)

var (
	// errGone: the name no longer exists in the directory.
	errGone = errors.New("file is gone")
	// errUnstable: the file changed while it was being hashed; look again later.
	errUnstable = errors.New("file changed while it was hashed")
)

const hashBufSize = 1 << 20

var hashBufs = sync.Pool{New: func() any { b := make([]byte, hashBufSize); return &b }}

// hashJob is a file found at start-up that the checksum cache does not know.
type hashJob struct {
	name string
	an   artifact.Name
}

// scan registers what is in the directory at start-up that needs no reading:
// files the checksum cache knows are published at once. It returns the files
// to hash, and the names that looked like binaries still being written (the
// watcher takes those over). The files to hash are marked pending (Hashing).
func (c *Catalog) scan() (jobs []hashJob, later []string, err error) {
	d, err := c.root.Open(".")
	if err != nil {
		return nil, nil, fmt.Errorf("read binaries dir %s: %w", c.dir, err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("read binaries dir %s: %w", c.dir, err)
	}
	var (
		found   []Binary
		present = map[string]bool{}
	)
	for _, e := range entries {
		name := e.Name()
		present[name] = true
		if artifact.Ignored(name) {
			continue
		}
		if isSignatureName(name) {
			c.checkSig(name)
			continue
		}
		fi, err := c.statEntry(name)
		if errors.Is(err, errGone) {
			continue
		}
		if err != nil {
			c.skip(name, err.Error())
			continue
		}
		an, err := artifact.ParseFilename(name)
		if err != nil {
			c.skip(name, err.Error())
			continue
		}
		id := idOf(fi)
		if rec, ok := c.known[name]; ok && rec.id() == id {
			if err := c.readable(name); err != nil {
				c.skip(name, err.Error())
				continue
			}
			c.cacheHits.Add(1)
			found = append(found, newBinary(an, name, id, fi.ModTime(), rec.SHA256))
			continue
		}
		if time.Since(fi.ModTime()) < c.opts.Settle {
			later = append(later, name)
			continue
		}
		if fi.Size() == 0 {
			c.skip(name, "empty file")
			continue
		}
		jobs = append(jobs, hashJob{name, an})
	}
	slices.SortFunc(found, func(a, b Binary) int { return compareStrings(a.Filename, b.Filename) })
	for _, b := range found {
		c.emit(c.publish(b, false)...)
	}
	c.mu.Lock()
	for name := range c.known {
		if !present[name] {
			delete(c.known, name)
		}
	}
	for _, j := range jobs {
		c.pending[j.name] = key{j.an.Artifact, j.an.Version, j.an.Platform, j.an.Arch}
	}
	c.mu.Unlock()
	return jobs, later, nil
}

// hashAll hashes the start-up jobs in parallel (HashWorkers) and publishes
// each binary as soon as it is hashed in the background, or all of them in
// file name order at the end otherwise. It returns the names that changed
// while being hashed; the watcher takes them over.
func (c *Catalog) hashAll(ctx context.Context, jobs []hashJob) (later []string) {
	var (
		mu    sync.Mutex
		found []Binary
	)
	next := make(chan hashJob)
	var wg sync.WaitGroup
	for range min(c.opts.HashWorkers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				b, err := c.hash(ctx, j.name, j.an)
				switch {
				case err == nil && c.opts.HashInBackground:
					c.emit(c.publish(b, true)...)
				case err == nil:
					mu.Lock()
					found = append(found, b)
					mu.Unlock()
				case errors.Is(err, errUnstable):
					mu.Lock()
					later = append(later, j.name)
					mu.Unlock()
				case ctx.Err() == nil:
					c.skip(j.name, err.Error())
				}
				c.mu.Lock()
				delete(c.pending, j.name)
				c.mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
	slices.SortFunc(found, func(a, b Binary) int { return compareStrings(a.Filename, b.Filename) })
	for _, b := range found {
		c.emit(c.publish(b, true)...)
	}
	c.mu.Lock()
	clear(c.pending)
	c.mu.Unlock()
	c.save()
	return later
}

// cause strips the *fs.PathError around err: the reason is logged next to
// the file name already.
func cause(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// readable checks that name opens as a regular file, without blocking.
func (c *Catalog) readable(name string) error {
	f, err := openNoBlock(c.root, name)
	if err != nil {
		return fmt.Errorf("cannot open: %w", cause(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot stat: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// statEntry stats name inside the root, following symlinks that stay inside.
// It returns errGone when the name does not exist, and an error whose text is
// the skip reason when the entry cannot be a binary.
func (c *Catalog) statEntry(name string) (fs.FileInfo, error) {
	fi, err := c.root.Stat(name)
	if err == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
		}
		return fi, nil
	}
	lfi, lerr := c.root.Lstat(name)
	switch {
	case lerr != nil && errors.Is(lerr, fs.ErrNotExist):
		return nil, errGone
	case lerr == nil && lfi.Mode()&fs.ModeSymlink != 0 && errors.Is(err, fs.ErrNotExist):
		return nil, errors.New("symlink to a missing file")
	case lerr == nil && lfi.Mode()&fs.ModeSymlink != 0:
		return nil, errors.New("symlink that leads outside BINARIES_DIR (not followed)")
	}
	return nil, fmt.Errorf("cannot stat: %w", err)
}

// hash streams the file through SHA-256 and returns the binary it describes.
// It fails with errUnstable when the file changed or was replaced meanwhile.
func (c *Catalog) hash(ctx context.Context, name string, an artifact.Name) (Binary, error) {
	select {
	case c.hashSem <- struct{}{}:
	case <-ctx.Done():
		return Binary{}, ctx.Err()
	}
	defer func() { <-c.hashSem }()
	f, err := openNoBlock(c.root, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Binary{}, errUnstable
		}
		return Binary{}, fmt.Errorf("cannot open: %w", cause(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Binary{}, fmt.Errorf("cannot stat: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Binary{}, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	bp := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(bp)
	buf := *bp
	h := sha256.New()
	var n int64
	hashStart := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return Binary{}, err
		}
		m, rerr := f.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return Binary{}, fmt.Errorf("cannot read: %w", rerr)
		}
	}
	c.hashedFiles.Add(1)
	c.hashedBytes.Add(n)
	c.hashNanos.Add(int64(time.Since(hashStart)))
	after, err := f.Stat()
	if err != nil || idOf(after) != idOf(fi) || n != fi.Size() {
		return Binary{}, errUnstable
	}
	if now, err := c.root.Stat(name); err != nil || idOf(now) != idOf(fi) {
		return Binary{}, errUnstable // replaced by rename while hashing
	}
	return newBinary(an, name, idOf(fi), fi.ModTime(), hex.EncodeToString(h.Sum(nil))), nil
}

func timeNowSecond() time.Time { return time.Now().Truncate(time.Second) }

func newBinary(an artifact.Name, name string, id fileID, mtime time.Time, sum string) Binary {
	v, _ := semver.Parse(an.Version) // ParseFilename checked it
	return Binary{
		Artifact: an.Artifact, Version: an.Version, Platform: an.Platform, Arch: an.Arch,
		Filename: name, Size: id.size, SHA256: sum, ModTime: mtime, id: id, ver: v,
	}
}

// publish makes b visible. Of two files with the same artifact, version,
// platform and arch (a windows binary with and without .exe) the one whose
// name sorts first is published and the other skipped.
func (c *Catalog) publish(b Binary, hashed bool) []Event {
	if err := c.admit(b); err != nil {
		return c.keepOut(b, fmt.Errorf("%w: %w", ErrRefused, err))
	}
	c.mu.Lock()
	if rec, ok := c.known[b.Filename]; ok && rec.SHA256 == b.SHA256 && rec.UploadedAt > 0 {
		b.UploadedAt = unixTime(rec.UploadedAt)
	} else {
		b.UploadedAt = timeNowSecond()
	}
	c.known[b.Filename] = newRecord(b)
	c.attachSig(&b)
	delete(c.stale, b.Filename)
	if old, ok := c.byName[b.Filename]; ok {
		delete(c.byName, b.Filename)
		delete(c.byKey, keyOf(old))
	}
	var evs []Event
	k := keyOf(b)
	if other, ok := c.byKey[k]; ok {
		if other < b.Filename {
			c.mu.Unlock()
			return c.skipEvents(b.Filename, fmt.Sprintf("duplicate of %s (same %s %s %s %s); %s is published",
				other, b.Artifact, b.Version, b.Platform, b.Arch, other))
		}
		ob := c.byName[other]
		delete(c.byName, other)
		delete(c.byKey, k)
		c.log.Info("binary withdrawn", "file", other, "reason", "duplicate of "+b.Filename)
		evs = append(evs, Event{Kind: Removed, Filename: other, Binary: ob, Reason: "duplicate of " + b.Filename})
		defer func() {
			c.emit(c.skipEvents(other, fmt.Sprintf("duplicate of %s (same %s %s %s %s); %s is published",
				b.Filename, b.Artifact, b.Version, b.Platform, b.Arch, b.Filename))...)
		}()
	}
	c.byName[b.Filename] = b
	c.byKey[k] = b.Filename
	delete(c.skipped, b.Filename)
	c.mu.Unlock()
	c.log.Info("binary registered", "file", b.Filename, "artifact", b.Artifact, "version", b.Version,
		"platform", b.Platform, "arch", b.Arch, "size_bytes", b.Size, "sha256", b.SHA256, "hashed", hashed)
	return append(evs, Event{Kind: Registered, Filename: b.Filename, Binary: b, Hashed: hashed})
}

// withdraw removes every trace of name: published, stale, cached, skipped.
// It reports whether name was published (or stale).
func (c *Catalog) withdraw(name, reason string) bool { return c.unpublish(name, reason, true) }

// refuse withdraws name because it cannot be served (not a regular file,
// unreadable) and records why, logging each only once: a file that stays
// unreadable is not withdrawn and logged again on every look.
func (c *Catalog) refuse(name, reason string) bool {
	withdrawn := c.unpublish(name, reason, false)
	c.skip(name, reason)
	return withdrawn
}

func (c *Catalog) unpublish(name, reason string, forget bool) bool {
	c.mu.Lock()
	b, ok := c.byName[name]
	if ok {
		delete(c.byName, name)
		delete(c.byKey, keyOf(b))
	} else {
		b, ok = c.stale[name]
	}
	delete(c.stale, name)
	_, wasKnown := c.known[name]
	delete(c.known, name)
	if forget {
		delete(c.skipped, name)
	}
	c.mu.Unlock()
	if ok {
		c.log.Info("binary removed", "file", name, "reason", reason)
		c.withdrawn(name)
		c.emit(Event{Kind: Removed, Filename: name, Binary: b, Reason: reason})
	}
	if wasKnown {
		c.save()
	}
	return ok
}

// skip records why name is not published, logging it once per reason.
func (c *Catalog) skip(name, reason string) {
	c.emit(c.skipEvents(name, reason)...)
}

func (c *Catalog) skipEvents(name, reason string) []Event {
	return c.skipEventsLevel(name, reason, slog.LevelWarn)
}

func (c *Catalog) skipEventsLevel(name, reason string, level slog.Level) []Event {
	c.mu.Lock()
	prev, had := c.skipped[name]
	c.skipped[name] = reason
	c.mu.Unlock()
	if had && prev == reason {
		return nil
	}
	c.log.Log(context.Background(), level, "skipping file", "file", name, "reason", reason)
	return []Event{{Kind: Skipped, Filename: name, Reason: reason}}
}

// save writes the checksum cache; failures are logged, the catalog works without it.
func (c *Catalog) save() {
	if c.cachePath == "" {
		return
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.RLock()
	snap := make(map[string]record, len(c.known))
	for k, v := range c.known {
		snap[k] = v
	}
	c.mu.RUnlock()
	if err := saveCache(c.cachePath, snap); err != nil {
		c.log.Warn("cannot save the checksum cache; the next start re-hashes", "path", c.cachePath, "err", err)
	}
}
