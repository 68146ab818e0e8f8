package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/httpjson"
)

// BackupPath is the HTTP route of BackupHandler.
const BackupPath = "/api/backup"

// backupWriteTimeout bounds one backup download: a reader holds a bbolt read
// transaction, which delays the database's growth while it lasts.
const backupWriteTimeout = 10 * time.Minute

// WriteTo writes a consistent copy of the whole database (one read
// transaction) to w while writers carry on.
func (b *Bolt) WriteTo(w io.Writer) (n int64, err error) {
	defer b.protect(&err, debug.SetPanicOnFault(true))
	err = b.db.View(func(tx *bolt.Tx) error {
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// BackupHandler serves GET /api/backup: a consistent copy of the running
// master's database, for `sutra-master backup`. The route has no
// authentication yet, so it answers clients on the master's own host only
// (loopback, or the address the request arrived on; 403 otherwise). A reverse proxy on the same host
// would make every client look local; don't expose this route through one.
func BackupHandler(b *Bolt, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sameHost(r) {
			httpjson.WriteError(w, http.StatusForbidden,
				"backups are served to loopback clients only: run `sutra-master backup FILE` on the master's host")
			return
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(backupWriteTimeout))
		started := false
		start := time.Now()
		var txid uint64
		var n int64
		err := func() (err error) {
			defer b.protect(&err, debug.SetPanicOnFault(true))
			return b.db.View(func(tx *bolt.Tx) error {
				txid = uint64(tx.ID())
				h := w.Header()
				h.Set("Content-Type", "application/octet-stream")
				h.Set("Content-Length", strconv.FormatInt(tx.Size(), 10))
				h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=\"grid-%d.db\"", txid))
				h.Set("X-Sutra-Txid", strconv.FormatUint(txid, 10))
				started = true
				if r.Method == http.MethodHead {
					return nil
				}
				n, err = tx.WriteTo(w)
				return err
			})
		}()
		switch {
		case err != nil && !started:
			log.Error("backup failed", "err", err)
			httpjson.WriteError(w, http.StatusInternalServerError, "backup failed: "+err.Error())
		case err != nil:
			log.Warn("backup cut short", "remote", r.RemoteAddr, "bytes", n, "err", err)
		default:
			log.Info("backup served", "remote", r.RemoteAddr, "bytes", n, "txid", txid, "took_ms", time.Since(start).Milliseconds())
		}
	})
}

// sameHost reports whether r comes from this host: from a loopback address,
// or from the very address it arrived on (a master bound to one interface).
func sameHost(r *http.Request) bool {
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := remote.Addr().Unmap()
	if ip.IsLoopback() {
		return true
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	l, err := netip.ParseAddrPort(local.String())
	return err == nil && l.Addr().Unmap() == ip
}

// SaveBackup writes a backup to dst crash-safely: write fills a temporary
// file next to dst, which is fsynced and verified (a copy that is not a
// sound database is an error, and dst is left alone) before it is renamed
// over dst.
func SaveBackup(dst string, write func(io.Writer) error) (info Info, err error) {
	dir := filepath.Dir(dst)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return Info{}, fmt.Errorf("backup %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = write(tmp); err != nil {
		return Info{}, fmt.Errorf("backup %s: %w", dst, err)
	}
	_ = tmp.Chmod(0o600) // best effort: Windows has no modes
	if err = tmp.Sync(); err != nil {
		return Info{}, fmt.Errorf("backup %s: fsync: %w", dst, err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("backup %s: %w", dst, err)
	}
	if info, err = verify(tmp, fi.Size()); err != nil {
		return Info{}, fmt.Errorf("backup %s: the copy is not a sound database (%w)", dst, err)
	}
	if err = tmp.Close(); err != nil {
		return Info{}, fmt.Errorf("backup %s: %w", dst, err)
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return Info{}, fmt.Errorf("backup %s: %w", dst, err)
	}
	return info, atomicfile.SyncDir(dir)
}

// BackupFile copies the database at dbPath to dst while no master runs on it
// (offline backup). It returns a *FileError wrapping ErrLocked when a master
// holds the file: ask that master instead (BackupHandler).
func BackupFile(dbPath, dst string) (Info, error) {
	if _, err := verifyLocked(dbPath, 0); err != nil {
		return Info{}, err
	}
	db, err := openBolt(dbPath, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err != nil {
		return Info{}, err
	}
	defer db.Close()
	return SaveBackup(dst, func(w io.Writer) (err error) {
		defer guard(dbPath, &err, debug.SetPanicOnFault(true))
		return db.View(func(tx *bolt.Tx) error {
			_, err := tx.WriteTo(w)
			return err
		})
	})
}

// Restore replaces dir/grid.db with the backup at src while no master runs:
// the backup is verified, copied next to the database, fsynced and verified
// again, the current file (if any) is kept as grid.db.<time>.old, the copy
// is renamed into place and the mark is rewritten to accept it. It returns
// what was installed and the name the old file was moved to ("" if none).
func Restore(dir, src string, o Options) (info Info, moved string, err error) {
	if _, err := Verify(src); err != nil {
		return Info{}, "", fmt.Errorf("restore: %s is not a usable backup: %w", src, err)
	}
	path := filepath.Join(dir, FileName)
	if err := checkUnlocked(path); err != nil {
		return Info{}, "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return Info{}, "", fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	tmp := filepath.Join(dir, "."+FileName+".restore.tmp")
	if _, err := SaveBackup(tmp, func(w io.Writer) error { _, err := io.Copy(w, in); return err }); err != nil {
		return Info{}, "", fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(tmp)
	chownLike(tmp, dir)
	if moved, err = moveAside(path); err != nil {
		return Info{}, "", fmt.Errorf("restore: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return Info{}, moved, fmt.Errorf("restore: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return Info{}, moved, fmt.Errorf("restore: %w", err)
	}
	if err := Accept(dir, o); err != nil {
		return Info{}, moved, fmt.Errorf("restore: %w", err)
	}
	info, err = Verify(path)
	return info, moved, err
}

// Accept opens dir/grid.db once, accepting it even though it is older than
// (or not the store named by) its mark, and records it in the mark. Damage
// is still an error.
func Accept(dir string, o Options) error {
	path := filepath.Join(dir, FileName)
	b, err := open(path, o, true)
	if err != nil {
		return err
	}
	err = b.Close()
	chownLike(markPath(path), path)
	return err
}

// Reset moves dir/grid.db aside (as grid.db.<time>.old) and removes its
// mark, so that the next start begins an empty fleet. Nothing is deleted.
// It returns the name the file was moved to ("" if there was none).
func Reset(dir string) (moved string, err error) {
	path := filepath.Join(dir, FileName)
	if err := checkUnlocked(path); err != nil {
		return "", err
	}
	if moved, err = moveAside(path); err != nil {
		return "", fmt.Errorf("reset: %w", err)
	}
	if err := os.Remove(markPath(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return moved, fmt.Errorf("reset: %w", err)
	}
	return moved, atomicfile.SyncDir(dir)
}

// checkUnlocked fails with ErrLocked when a master holds path.
func checkUnlocked(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	ok, err := tryLockShared(f)
	if err != nil {
		return fmt.Errorf("%s: lock: %w", path, err)
	}
	if !ok {
		return &FileError{Path: path, Err: ErrLocked, Detail: "a sutra-master is using this database", Fix: "stop it first"}
	}
	return nil
}

// moveAside renames path to path.<UTC time>.old; "" if path does not exist.
func moveAside(path string) (string, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	aside := path + "." + time.Now().UTC().Format("20060102T150405Z") + ".old"
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	return aside, nil
}
