package catalog

import (
	"errors"
	"fmt"
	"log/slog"
)

// Gate decides whether this master may publish a binary, and hears when it
// withdraws one. With several masters it is their binaries registry
// (master/binpeers): a file whose checksum differs from the one another
// master publishes under the same name is kept out.
type Gate interface {
	// Admit is called before a binary is published (its content hashed,
	// or known from the checksum cache). An error keeps the file out: it
	// is not listed nor downloadable, and the error is logged once, at
	// error level, as the reason. The file is offered again when it
	// changes on disk and on every rescan (Options.Rescan). Admit may
	// block on I/O; it is called from the catalog's own goroutines.
	Admit(name, sha256 string, size int64) error
	// Withdrawn is called after a published binary was withdrawn (deleted,
	// renamed, no longer valid). It must not block.
	Withdrawn(name string)
}

// ErrRefused wraps the error of a Gate that kept a binary out.
var ErrRefused = errors.New("binary refused")

// SetGate installs the gate (nil removes it) and offers it every binary
// published now: those it refuses are withdrawn. The master calls it once
// the store is open, after the catalog may already serve.
func (c *Catalog) SetGate(g Gate) {
	if g == nil {
		c.gate.Store(nil)
		return
	}
	c.gate.Store(&g)
	for _, b := range c.List("") {
		err := g.Admit(b.Filename, b.SHA256, b.Size)
		if err == nil {
			continue
		}
		err = fmt.Errorf("%w: %w", ErrRefused, err)
		c.mu.Lock()
		cur, ok := c.byName[b.Filename]
		if ok && cur.id == b.id && cur.SHA256 == b.SHA256 {
			delete(c.byName, b.Filename)
			delete(c.byKey, keyOf(b))
		}
		c.mu.Unlock()
		if ok {
			c.log.Info("binary removed", "file", b.Filename, "reason", "refused: "+err.Error())
			c.emit(Event{Kind: Removed, Filename: b.Filename, Binary: b, Reason: err.Error()})
		}
		c.emit(c.skipEventsLevel(b.Filename, err.Error(), slog.LevelError)...)
	}
}

// admit asks the gate, if any, whether b may be published.
func (c *Catalog) admit(b Binary) error {
	g := c.gate.Load()
	if g == nil {
		return nil
	}
	return (*g).Admit(b.Filename, b.SHA256, b.Size)
}

// withdrawn tells the gate, if any, that name is no longer published.
func (c *Catalog) withdrawn(name string) {
	if g := c.gate.Load(); g != nil {
		(*g).Withdrawn(name)
	}
}

// keepOut records b as hashed (so it is not hashed again) but not
// published, because the gate refused it.
func (c *Catalog) keepOut(b Binary, err error) []Event {
	c.mu.Lock()
	if rec, ok := c.known[b.Filename]; ok && rec.SHA256 == b.SHA256 && rec.UploadedAt > 0 {
		b.UploadedAt = unixTime(rec.UploadedAt)
	} else {
		b.UploadedAt = timeNowSecond()
	}
	c.known[b.Filename] = newRecord(b)
	delete(c.stale, b.Filename)
	old, was := c.byName[b.Filename]
	if was {
		delete(c.byName, b.Filename)
		delete(c.byKey, keyOf(old))
	}
	c.mu.Unlock()
	var evs []Event
	if was {
		c.log.Info("binary removed", "file", b.Filename, "reason", "refused: "+err.Error())
		evs = append(evs, Event{Kind: Removed, Filename: b.Filename, Binary: old, Reason: err.Error()})
	}
	return append(evs, c.skipEventsLevel(b.Filename, err.Error(), slog.LevelError)...)
}
