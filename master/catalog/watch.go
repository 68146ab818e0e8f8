package catalog

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sutragrid/sutra/internal/artifact"
)

// watch follows the directory until ctx ends: fsnotify events, re-checks
// asked for by Open, and a periodic rescan. Every name is looked at by at most
// one check at a time; events arriving meanwhile cause one more check after it.
func (c *Catalog) watch(ctx context.Context, initial []string) {
	var (
		events  <-chan fsnotify.Event
		errs    <-chan error
		timers  = map[string]*time.Timer{}
		running = map[string]bool{}
		again   = map[string]bool{}
		due     = make(chan string, 64)
		done    = make(chan checkResult)
		active  = 0
	)
	if c.watcher != nil {
		events, errs = c.watcher.Events, c.watcher.Errors
	}
	var rescan <-chan time.Time
	if c.opts.Rescan > 0 {
		t := time.NewTicker(c.opts.Rescan)
		defer t.Stop()
		rescan = t.C
	}
	schedule := func(name string) {
		if t, ok := timers[name]; ok {
			t.Reset(c.opts.Debounce)
			return
		}
		timers[name] = time.AfterFunc(c.opts.Debounce, func() {
			select {
			case due <- name:
			case <-ctx.Done():
			}
		})
	}
	for _, name := range initial {
		schedule(name)
	}
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
		for active > 0 { // checks end promptly once ctx is done
			<-done
			active--
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Clean(filepath.Dir(ev.Name)) != c.dir {
				continue
			}
			name := filepath.Base(ev.Name)
			if name == filepath.Base(c.dir) && ev.Name == c.dir {
				c.log.Warn("the binaries dir itself was removed or renamed", "dir", c.dir, "op", ev.Op.String())
				continue
			}
			if artifact.Ignored(name) {
				continue
			}
			if ev.Has(fsnotify.Write) || ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				// The content is no longer the one that was hashed.
				c.invalidate(name)
			}
			schedule(name)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			c.log.Warn("watching the binaries dir", "dir", c.dir, "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				for _, name := range c.allNames() {
					schedule(name)
				}
			}
		case name := <-c.kick:
			schedule(name)
		case <-rescan:
			for _, name := range c.allNames() {
				schedule(name)
			}
		case name := <-due:
			delete(timers, name)
			if running[name] {
				again[name] = true
				continue
			}
			running[name] = true
			active++
			go func() {
				// The loop, or its deferred drain, always receives.
				done <- checkResult{name, c.check(ctx, name)}
			}()
		case r := <-done:
			active--
			delete(running, r.name)
			if again[r.name] || r.retry {
				delete(again, r.name)
				schedule(r.name)
			}
		}
	}
}

type checkResult struct {
	name  string
	retry bool
}

// allNames returns every name worth a look: the directory's entries and
// everything the catalog remembers.
func (c *Catalog) allNames() []string {
	seen := map[string]bool{}
	if d, err := c.root.Open("."); err == nil {
		entries, _ := d.ReadDir(-1)
		d.Close()
		for _, e := range entries {
			if !artifact.Ignored(e.Name()) {
				seen[e.Name()] = true
			}
		}
	}
	c.mu.RLock()
	for _, m := range []map[string]Binary{c.byName, c.stale} {
		for name := range m {
			seen[name] = true
		}
	}
	for name := range c.skipped {
		seen[name] = true
	}
	for bin := range c.sigs {
		seen[SignatureName(bin)] = true
	}
	c.mu.RUnlock()
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	return out
}

// check brings the catalog's view of one name in line with the disk. It
// returns true when it should be called again (the file is still changing).
func (c *Catalog) check(ctx context.Context, name string) (retry bool) {
	if isSignatureName(name) {
		c.checkSig(name)
		return false
	}
	fi, err := c.statEntry(name)
	if errors.Is(err, errGone) {
		if c.withdraw(name, "file deleted or renamed") {
			c.recheckSkipped()
		}
		return false
	}
	if err != nil {
		if c.refuse(name, err.Error()) {
			c.recheckSkipped()
		}
		return false
	}
	an, err := artifact.ParseFilename(name)
	if err != nil {
		c.skip(name, err.Error())
		return false
	}
	id := idOf(fi)
	c.mu.RLock()
	pub, isPub := c.byName[name]
	st, isStale := c.stale[name]
	rec, isKnown := c.known[name]
	c.mu.RUnlock()
	switch {
	case isPub && pub.id == id:
		return false
	case (isStale && st.id == id) || (isKnown && rec.id() == id):
		// Same content; but a download may have found it unopenable.
		if err := c.readable(name); err != nil {
			if c.refuse(name, err.Error()) {
				c.recheckSkipped()
			}
			return false
		}
		if isStale && st.id == id {
			c.emit(c.publish(st, false)...) // an event without a content change
			return false
		}
		c.cacheHits.Add(1)
		c.emit(c.publish(newBinary(an, name, id, fi.ModTime(), rec.SHA256), false)...)
		c.save()
		return false
	case isPub:
		c.invalidate(name)
	}
	// Settle: hash only a file whose size and mtime stopped changing.
	for time.Since(fi.ModTime()) < c.opts.Settle {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(c.opts.Settle):
		}
		now, err := c.statEntry(name)
		if err != nil {
			return true
		}
		if idOf(now) == idOf(fi) {
			break
		}
		fi = now
	}
	if fi.Size() == 0 {
		c.skip(name, "empty file")
		return false
	}
	b, err := c.hash(ctx, name, an)
	switch {
	case errors.Is(err, errUnstable):
		return true
	case err != nil:
		if ctx.Err() == nil && c.refuse(name, err.Error()) {
			c.recheckSkipped()
		}
		return false
	}
	c.emit(c.publish(b, true)...)
	c.save()
	return false
}

// recheckSkipped looks again at skipped files: one may have been a duplicate
// of a file that is now gone.
func (c *Catalog) recheckSkipped() {
	c.mu.RLock()
	var names []string
	for name := range c.skipped {
		names = append(names, name)
	}
	c.mu.RUnlock()
	for _, name := range names {
		select {
		case c.kick <- name:
		default:
		}
	}
}
