package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the database file inside the data directory.
const FileName = "grid.db"

// Conditions of the database file that stop the master from starting; they
// come wrapped in a *FileError that names the file and what to do.
var (
	// ErrDamaged: the file is not a sound database (truncated, overwritten,
	// zeroed pages).
	ErrDamaged = errors.New("damaged")
	// ErrEmpty: the file is 0 bytes, or missing while its mark says a fleet
	// was stored in it.
	ErrEmpty = errors.New("empty")
	// ErrRolledBack: the file is older than the last state this data
	// directory saw, or is another store's file.
	ErrRolledBack = errors.New("rolled back")
	// ErrLocked: another process (a running master) holds the file.
	ErrLocked = errors.New("locked")
)

// FileError is a database file the store refuses to use, and what to do.
type FileError struct {
	Path   string
	Err    error  // ErrDamaged, ErrEmpty, ErrRolledBack or ErrLocked
	Detail string // what is wrong, for people
	Fix    string // what to do next
}

func (e *FileError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Path, e.Detail, e.Fix)
}

func (e *FileError) Unwrap() error { return e.Err }

// Unreadable is the *FileError (ErrDamaged) for a database whose records
// its reader cannot decode (cause), with what to do.
func Unreadable(path string, cause error) error {
	return &FileError{Path: path, Err: ErrDamaged,
		Detail: "the fleet database holds records the master cannot read (" + cause.Error() + ")", Fix: fixDamaged(path)}
}

// fixDamaged and fixRolledBack say what to run, on the file's data directory.
func fixDamaged(path string) string {
	d := quoteArg(filepath.Dir(path))
	return "restore a backup with `sutra-master restore --data-dir " + d + " BACKUP-FILE`, " +
		"or run `sutra-master reset-db --data-dir " + d + "` to move it aside and start an empty fleet"
}

func fixRolledBack(path string) string {
	d := quoteArg(filepath.Dir(path))
	return "restore the newest backup with `sutra-master restore --data-dir " + d + " BACKUP-FILE`; " +
		"if you put this file in place on purpose, run `sutra-master accept-db --data-dir " + d + "` once"
}

const fixLocked = "is another sutra-master using this data directory? Stop it first"

// quoteArg quotes a path for a shell command line when it needs it.
func quoteArg(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:\\", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Options tune Open. The zero value is usable.
type Options struct {
	// Logger receives start-up findings. Nil: discard.
	Logger *slog.Logger
	// LockTimeout bounds the wait for the file lock. Zero: 3 s.
	LockTimeout time.Duration
	// MarkInterval is the most often the mark file is rewritten while
	// writing. Zero: 10 s.
	MarkInterval time.Duration
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 3 * time.Second
	}
	if o.MarkInterval == 0 {
		o.MarkInterval = 10 * time.Second
	}
}

// Bolt is the embedded Store: one bbolt file.
type Bolt struct {
	db   *bolt.DB
	path string
	id   string
	opts Options

	markMu   sync.Mutex
	markTxID uint64
	markedAt time.Time

	rs revState // revisions and watchers (revision.go)
}

var _ Store = (*Bolt)(nil)

// internalBucket holds the store's own records (its id); it is not a table.
var (
	internalBucket = []byte("_store")
	idKey          = []byte("id")
)

// OpenDir opens (creating if needed) dir/grid.db with default options.
func OpenDir(dir string) (*Bolt, error) { return OpenDirOptions(dir, Options{}) }

// OpenDirOptions opens (creating if needed) dir/grid.db.
func OpenDirOptions(dir string, o Options) (*Bolt, error) {
	if dir == "" {
		return nil, errors.New("open store: empty data directory: set SUTRA_DATA_DIR")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create data directory %s: %w", dir, err)
	}
	return OpenOptions(filepath.Join(dir, FileName), o)
}

// Open opens (creating if needed) the bbolt file at path with default options.
func Open(path string) (*Bolt, error) { return OpenOptions(path, Options{}) }

// OpenOptions opens (creating if needed) the bbolt file at path. It fails
// after Options.LockTimeout, instead of hanging, when another process holds
// the file, and returns a *FileError (never panics) when the file is
// damaged, empty or rolled back (see the package documentation).
func OpenOptions(path string, o Options) (*Bolt, error) {
	return open(path, o, false)
}

func open(path string, o Options, accept bool) (*Bolt, error) {
	o.setDefaults()
	log := o.Logger.With("file", path)
	mk, err := readMark(path)
	if err != nil {
		log.Warn("ignoring an unreadable database mark; it is rewritten now", "mark", markPath(path), "err", err)
		mk = mark{}
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if mk.StoreID != "" && !accept {
			return nil, &FileError{Path: path, Err: ErrEmpty,
				Detail: fmt.Sprintf("the fleet database is missing, but %s records one (transaction %d, %s)",
					filepath.Base(markPath(path)), mk.TxID, mk.Updated.UTC().Format(time.RFC3339)),
				Fix: fixDamaged(path)}
		}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	case fi.Size() == 0:
		return nil, &FileError{Path: path, Err: ErrEmpty,
			Detail: "the fleet database is empty (0 bytes): it was truncated, or its creation was interrupted",
			Fix:    fixDamaged(path)}
	default:
		start := time.Now()
		info, err := verifyLocked(path, o.LockTimeout)
		if err != nil {
			return nil, err
		}
		log.Info("fleet database verified", "bytes", info.Size, "pages", info.Pages, "txid", info.TxID,
			"took_ms", time.Since(start).Milliseconds())
	}

	db, err := openBolt(path, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		return nil, err
	}
	b := &Bolt{db: db, path: path, opts: o}
	if err := b.init(mk, accept); err != nil {
		_ = db.Close()
		return nil, err
	}
	return b, nil
}

// verifyLocked checks the file while holding a shared lock on it, so that a
// running master (which holds the exclusive lock) is reported as such and
// not as damage from reading a file in mid-write.
func verifyLocked(path string, timeout time.Duration) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close() // releases the lock
	for deadline := time.Now().Add(timeout); ; {
		ok, err := tryLockShared(f)
		if err != nil {
			return Info{}, fmt.Errorf("open store %s: lock: %w", path, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return Info{}, &FileError{Path: path, Err: ErrLocked, Detail: "the file is locked", Fix: fixLocked}
		}
		time.Sleep(50 * time.Millisecond)
	}
	fi, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("open store %s: %w", path, err)
	}
	info, err := verify(f, fi.Size())
	if err != nil {
		return info, &FileError{Path: path, Err: ErrDamaged, Detail: "the fleet database is damaged (" + err.Error() + ")", Fix: fixDamaged(path)}
	}
	return info, nil
}

// openBolt opens the file with bbolt, turning a panic or memory fault inside
// bbolt into an error.
func openBolt(path string, bo *bolt.Options) (db *bolt.DB, err error) {
	defer guard(path, &err, debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, bo)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &FileError{Path: path, Err: ErrLocked, Detail: "the file is locked", Fix: fixLocked}
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, &FileError{Path: path, Err: ErrDamaged, Detail: "the fleet database is damaged (" + err.Error() + ")", Fix: fixDamaged(path)}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// guard recovers a panic (bbolt panics on pages it finds inconsistent; a
// memory fault on its map becomes a panic while SetPanicOnFault is on) into a
// damage error. Use as `defer guard(path, &err, debug.SetPanicOnFault(true))`
// at the top of a function that calls into bbolt.
func guard(path string, err *error, oldPanicOnFault bool) {
	if r := recover(); r != nil {
		*err = &FileError{Path: path, Err: ErrDamaged, Detail: fmt.Sprintf("the fleet database is damaged (bbolt: %v)", r), Fix: fixDamaged(path)}
	}
	debug.SetPanicOnFault(oldPanicOnFault)
}

// init creates the tables and the store id, and checks the file against its
// mark: a file older than the mark, or another store's file, is refused
// unless accept is set.
func (b *Bolt) init(mk mark, accept bool) (err error) {
	defer b.protect(&err, debug.SetPanicOnFault(true))
	var id string
	var txid uint64
	if err := b.db.View(func(tx *bolt.Tx) error {
		txid = uint64(tx.ID())
		if err := checkSchema(tx); err != nil {
			return &FileError{Path: b.path, Err: ErrDamaged, Detail: "the fleet database is damaged (" + err.Error() + ")", Fix: fixDamaged(b.path)}
		}
		if bk := tx.Bucket(internalBucket); bk != nil {
			id = string(bk.Get(idKey))
		}
		return nil
	}); err != nil {
		var fe *FileError
		if errors.As(err, &fe) {
			return err
		}
		return fmt.Errorf("open store %s: %w", b.path, err)
	}
	log := b.opts.Logger.With("file", b.path)
	if mk.StoreID != "" {
		switch {
		case id != mk.StoreID && !accept:
			return &FileError{Path: b.path, Err: ErrRolledBack,
				Detail: fmt.Sprintf("this is not the fleet database this data directory was using (store id %q, %s records %q): it was replaced",
					id, filepath.Base(markPath(b.path)), mk.StoreID),
				Fix: fixRolledBack(b.path)}
		case txid < mk.TxID && !accept:
			return &FileError{Path: b.path, Err: ErrRolledBack,
				Detail: fmt.Sprintf("the fleet database was rolled back: it ends at transaction %d, but this master had committed transaction %d by %s (recorded in %s)",
					txid, mk.TxID, mk.Updated.UTC().Format(time.RFC3339), filepath.Base(markPath(b.path))),
				Fix: fixRolledBack(b.path)}
		case accept && (id != mk.StoreID || txid < mk.TxID):
			log.Warn("accepting a fleet database older than its mark or from another store", "txid", txid,
				"mark_txid", mk.TxID, "store_id", id, "mark_store_id", mk.StoreID)
		}
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		for _, t := range Tables {
			if _, err := tx.CreateBucketIfNotExists([]byte(t)); err != nil {
				return fmt.Errorf("create table %s: %w", t, err)
			}
		}
		in, err := tx.CreateBucketIfNotExists(internalBucket)
		if err != nil {
			return err
		}
		if id == "" {
			var r [16]byte
			_, _ = rand.Read(r[:])
			id = hex.EncodeToString(r[:])
			if err := in.Put(idKey, []byte(id)); err != nil {
				return err
			}
			log.Info("new fleet database", "store_id", id)
		}
		txid = uint64(tx.ID())
		return nil
	})
	if errors.Is(err, berrors.ErrIncompatibleValue) { // a value where a bucket belongs, or the reverse
		return &FileError{Path: b.path, Err: ErrDamaged, Detail: "the fleet database is damaged (" + err.Error() + ")", Fix: fixDamaged(b.path)}
	}
	if err != nil {
		return fmt.Errorf("open store %s: %w", b.path, err)
	}
	b.id = id
	return b.writeMark(txid)
}

// checkSchema checks the layout the store writes, which a structurally
// sound file can still break (a flipped bucket flag): the root holds only
// buckets (the tables and the internal bucket), tables hold only values, and
// in the internal bucket revsBucket holds one bucket of values per table
// while every other key is a value. A cursor returns a nil value for a bucket.
func checkSchema(tx *bolt.Tx) error {
	c := tx.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			return fmt.Errorf("top-level key %q is a value, not a table", k)
		}
		bk := tx.Bucket(k)
		if bk == nil {
			return fmt.Errorf("table %q cannot be opened", k)
		}
		if string(k) == string(internalBucket) {
			if err := checkInternal(bk); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			continue
		}
		if err := onlyValues(bk); err != nil {
			return fmt.Errorf("table %q: %w", k, err)
		}
	}
	return nil
}

func checkInternal(in *bolt.Bucket) error {
	c := in.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if string(k) != string(revsBucket) {
			if v == nil {
				return fmt.Errorf("key %q is a bucket, not a value", k)
			}
			continue
		}
		revs := in.Bucket(k)
		if v != nil || revs == nil {
			return fmt.Errorf("%q is not a bucket", k)
		}
		rc := revs.Cursor()
		for t, tv := rc.First(); t != nil; t, tv = rc.Next() {
			tb := revs.Bucket(t)
			if tv != nil || tb == nil {
				return fmt.Errorf("%s/%q is not a bucket", k, t)
			}
			if err := onlyValues(tb); err != nil {
				return fmt.Errorf("%s/%q: %w", k, t, err)
			}
		}
	}
	return nil
}

func onlyValues(bk *bolt.Bucket) error {
	c := bk.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			return fmt.Errorf("key %q is a bucket, not a value", k)
		}
	}
	return nil
}

// protect is guard for methods; it also logs the stack. Use as
// `defer b.protect(&err, debug.SetPanicOnFault(true))`.
func (b *Bolt) protect(err *error, old bool) {
	if r := recover(); r != nil {
		if cp, ok := r.(callbackPanic); ok {
			debug.SetPanicOnFault(old)
			panic(cp.v) // the caller's bug, not the file's
		}
		*err = &FileError{Path: b.path, Err: ErrDamaged, Detail: fmt.Sprintf("the fleet database is damaged (bbolt: %v)", r), Fix: fixDamaged(b.path)}
		b.opts.Logger.Error("fleet database damaged while in use", "file", b.path, "panic", r, "stack", string(debug.Stack()))
	}
	debug.SetPanicOnFault(old)
}

// callbackPanic carries a panic of a Scan callback through protect unchanged.
type callbackPanic struct{ v any }

func callback(fn func(k, v []byte) error, k, v []byte) error {
	defer func() {
		if r := recover(); r != nil {
			panic(callbackPanic{r})
		}
	}()
	return fn(k, v)
}

// Apply implements Store. All ops commit in one bbolt transaction (one fsync).
func (b *Bolt) Apply(ctx context.Context, ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	_, err := b.commit(ctx, nil, ops)
	return err
}

// Scan implements Store.
func (b *Bolt) Scan(ctx context.Context, table string, fn func(key, value []byte) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer b.protect(&err, debug.SetPanicOnFault(true))
	err = b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(table))
		if bk == nil || table == string(internalBucket) {
			return fmt.Errorf("%w %q", ErrUnknownTable, table)
		}
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := callback(fn, k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("store scan: %w", ErrClosed)
	}
	return err
}

// Close implements Store: it records the last transaction in the mark and
// closes the file.
func (b *Bolt) Close() error {
	var txid uint64
	_ = b.db.View(func(tx *bolt.Tx) error { txid = uint64(tx.ID()); return nil })
	merr := b.writeMark(txid)
	b.closeWatchers()
	return errors.Join(b.db.Close(), merr)
}

// Path returns the database file path.
func (b *Bolt) Path() string { return b.path }

// Health reports the bbolt file: OK while it answers a read.
func (b *Bolt) Health(ctx context.Context) Health {
	h := Health{Backend: "bbolt", OK: true, Members: []MemberHealth{{Endpoint: b.path, OK: true}}}
	if _, err := b.Revision(ctx); err != nil {
		h.OK, h.Detail = false, err.Error()
		h.Members[0].OK, h.Members[0].Error = false, err.Error()
	}
	if fi, err := os.Stat(b.path); err == nil {
		h.Members[0].DBSizeBytes = fi.Size()
	}
	return h
}
