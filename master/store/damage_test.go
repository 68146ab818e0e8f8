package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fillDB creates dir/grid.db holding n agents of 300 bytes each (several
// levels of b-tree pages) and returns its path and bytes.
func fillDB(t testing.TB, dir string, n int) (string, []byte) {
	t.Helper()
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ops []Op
	for i := range n {
		ops = append(ops, Put(TableAgents, fmt.Appendf(nil, "agent-%05d", i), bytes.Repeat([]byte{'a' + byte(i%26)}, 300)))
		ops = append(ops, Put(TableMeta, fmt.Appendf(nil, "m%d", i%7), []byte("small")))
	}
	if err := b.Apply(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// openAndRead opens path and reads every table; it must never panic.
func openAndRead(dir string) error {
	b, err := OpenDir(dir)
	if err != nil {
		return err
	}
	defer b.Close()
	for _, tb := range Tables {
		if err := b.Scan(context.Background(), tb, func(k, v []byte) error { return nil }); err != nil {
			return err
		}
	}
	return b.Apply(context.Background(), []Op{Put(TableAgents, []byte("after"), []byte("x"))})
}

func wantFileError(t *testing.T, err error, path string, kind error) {
	t.Helper()
	var fe *FileError
	if !errors.As(err, &fe) || !errors.Is(err, kind) {
		t.Fatalf("open = %v, want a *FileError wrapping %v", err, kind)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "sutra-master") || strings.Contains(msg, "\n") {
		t.Fatalf("open error %q: want one line naming %s and the sutra-master command to run", msg, path)
	}
}

// TestOpenDamaged: issue 9 item 4. Today's code panics inside bbolt (a
// crash loop under Restart=always); each damaged file must be an error
// naming the file and what to do.
func TestOpenDamaged(t *testing.T) {
	_, orig := fillDB(t, t.TempDir(), 400)
	ps := 4096
	if info, err := verify(bytes.NewReader(orig), int64(len(orig))); err != nil {
		t.Fatalf("verify(sound file) = %v", err)
	} else {
		ps = info.PageSize
	}
	cases := map[string]func([]byte) []byte{
		"truncated to half":                 func(d []byte) []byte { return d[:len(d)/2] },
		"truncated to 3 pages":              func(d []byte) []byte { return d[:3*ps] },
		"both meta pages zeroed":            func(d []byte) []byte { clear(d[:2*ps]); return d },
		"everything after the metas zeroed": func(d []byte) []byte { clear(d[2*ps:]); return d },
		"root of the agents bucket zeroed": func(d []byte) []byte {
			for id := 2; id*ps < len(d); id++ { // every leaf/branch page; the first holding "agent-" keys
				p := d[id*ps : (id+1)*ps]
				if bytes.Contains(p, []byte("agent-00000")) {
					clear(p)
					break
				}
			}
			return d
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, damage(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			wantFileError(t, openAndRead(dir), path, ErrDamaged)
		})
	}
}

// TestOpenEveryPageDamaged overwrites each page in turn with random bytes,
// with zeros, and with a copy of another page: opening and reading must
// never panic, and damage to a page in use must be an error.
func TestOpenEveryPageDamaged(t *testing.T) {
	_, orig := fillDB(t, t.TempDir(), 400)
	info, err := verify(bytes.NewReader(orig), int64(len(orig)))
	if err != nil {
		t.Fatal(err)
	}
	ps := info.PageSize
	rng := rand.New(rand.NewPCG(9, 4))
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	var refused, accepted int
	for id := 0; uint64(id) < info.Pages; id++ {
		for _, how := range []string{"random", "zeroed", "copy of page 2"} {
			d := bytes.Clone(orig)
			p := d[id*ps : (id+1)*ps]
			switch how {
			case "random":
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
			case "zeroed":
				clear(p)
			default:
				copy(p, orig[2*ps:3*ps])
			}
			_ = os.Remove(markPath(path))
			if err := os.WriteFile(path, d, 0o600); err != nil {
				t.Fatal(err)
			}
			err := openAndRead(dir)
			switch {
			case err == nil:
				accepted++ // a free page, or one meta page (bbolt uses the other)
			case errors.Is(err, ErrDamaged):
				refused++
				if !strings.Contains(err.Error(), path) {
					t.Fatalf("page %d %s: error %q does not name %s", id, how, err, path)
				}
			default:
				t.Fatalf("page %d %s: open = %v, want nil or ErrDamaged", id, how, err)
			}
		}
	}
	t.Logf("%d pages: %d damaged variants refused, %d harmless ones opened", info.Pages, refused, accepted)
	if refused == 0 {
		t.Fatal("no damaged page was detected")
	}
}

// TestOpenEmptyOrMissing: a 0-byte grid.db, or a missing one whose mark
// says a fleet existed, is refused, never started as a new fleet.
func TestOpenEmptyOrMissing(t *testing.T) {
	t.Run("0 bytes, no mark", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := OpenDir(dir)
		wantFileError(t, err, path, ErrEmpty)
	})
	t.Run("truncated to 0 bytes", func(t *testing.T) {
		dir := t.TempDir()
		path, _ := fillDB(t, dir, 10)
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		_, err := OpenDir(dir)
		wantFileError(t, err, path, ErrEmpty)
		if fi, _ := os.Stat(path); fi.Size() != 0 {
			t.Fatalf("refused open changed the file to %d bytes", fi.Size())
		}
	})
	t.Run("deleted", func(t *testing.T) {
		dir := t.TempDir()
		path, _ := fillDB(t, dir, 10)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		_, err := OpenDir(dir)
		wantFileError(t, err, path, ErrEmpty)
		if _, err := os.Stat(path); err == nil {
			t.Fatal("refused open created a new grid.db")
		}
		// reset-db: start an empty fleet on purpose.
		if _, err := Reset(dir); err != nil {
			t.Fatal(err)
		}
		b, err := OpenDir(dir)
		if err != nil {
			t.Fatalf("open after Reset = %v", err)
		}
		_ = b.Close()
	})
}

// TestOpenRolledBack: an older copy of the database put back in place (or
// another store's file) is refused until accepted.
func TestOpenRolledBack(t *testing.T) {
	dir := t.TempDir()
	path, old := fillDB(t, dir, 10)
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := b.Apply(context.Background(), []Op{Put(TableAgents, fmt.Appendf(nil, "new-%d", i), []byte("x"))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenDir(dir)
	wantFileError(t, err, path, ErrRolledBack)
	if !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("error %q does not say the file was rolled back", err)
	}
	if err := Accept(dir, Options{}); err != nil {
		t.Fatalf("Accept = %v", err)
	}
	b, err = OpenDir(dir)
	if err != nil {
		t.Fatalf("open after Accept = %v", err)
	}
	_ = b.Close()

	// Another store's file in its place.
	_, other := fillDB(t, t.TempDir(), 10)
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenDir(dir)
	wantFileError(t, err, path, ErrRolledBack)
}

// TestBackupOnlineRestore: a backup taken from a store that is being
// written opens and holds the data; Restore installs it and keeps the old
// file.
func TestBackupOnlineRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	if err := b.Apply(ctx, []Op{Put(TableAgents, []byte("a1"), []byte("one"))}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(BackupHandler(b, nil))
	defer srv.Close()

	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { // writers carry on during the backup
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := b.Apply(ctx, []Op{Put(TableEvents, fmt.Appendf(nil, "%08d", i), bytes.Repeat([]byte("e"), 500))}); err != nil {
				done <- err
				return
			}
		}
	}()
	dst := filepath.Join(t.TempDir(), "backup.db")
	info, err := SaveBackup(dst, func(w io.Writer) error {
		resp, err := http.Get(srv.URL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %s", resp.Status)
		}
		_, err = io.Copy(w, resp.Body)
		return err
	})
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if info.TxID < 2 {
		t.Fatalf("backup txid %d", info.TxID)
	}

	if _, _, err := Restore(dir, dst, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("Restore while the store is open = %v, want ErrLocked", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, moved, err := Restore(dir, dst, Options{}); err != nil || moved == "" {
		t.Fatalf("Restore = %q, %v", moved, err)
	} else if _, err := Verify(moved); err != nil {
		t.Fatalf("moved-aside file %s: %v", moved, err)
	}
	b, err = OpenDir(dir)
	if err != nil {
		t.Fatalf("open restored = %v", err)
	}
	var got string
	_ = b.Scan(ctx, TableAgents, func(k, v []byte) error { got += string(k) + "=" + string(v); return nil })
	if got != "a1=one" {
		t.Fatalf("restored agents = %q, want a1=one", got)
	}

	// A damaged backup is refused, and the database is left alone.
	bad := filepath.Join(t.TempDir(), "bad.db")
	data, _ := os.ReadFile(dst)
	_ = os.WriteFile(bad, data[:len(data)/2], 0o600)
	_ = b.Close()
	if _, _, err := Restore(dir, bad, Options{}); err == nil {
		t.Fatal("Restore(truncated backup) succeeded")
	}
	if err := openAndRead(dir); err != nil {
		t.Fatalf("database after a refused restore: %v", err)
	}

	// Non-loopback clients are refused.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", BackupPath, nil)
	req.RemoteAddr = "192.0.2.7:5555"
	BackupHandler(b, nil).ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Fatalf("backup from 192.0.2.7 = %d %s, want 403 JSON", rec.Code, rec.Body)
	}
}

// TestBackupFileOffline copies a closed store; a locked one is refused.
func TestBackupFileOffline(t *testing.T) {
	dir := t.TempDir()
	path, _ := fillDB(t, dir, 50)
	dst := filepath.Join(t.TempDir(), "b.db")
	if _, err := BackupFile(path, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dst); err != nil {
		t.Fatal(err)
	}
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := BackupFile(path, dst+"2"); !errors.Is(err, ErrLocked) {
		t.Fatalf("BackupFile(open store) = %v, want ErrLocked", err)
	}
}

// FuzzOpen mutates a small database file: opening and reading it must never
// panic, and an error must be a *FileError.
func FuzzOpen(f *testing.F) {
	_, orig := fillDB(f, f.TempDir(), 40)
	f.Add(uint32(0), []byte{0xff})
	f.Add(uint32(4096*2+8), []byte{0, 0, 0, 0})
	f.Add(uint32(4096*3), bytes.Repeat([]byte{0xff}, 64))
	f.Add(uint32(len(orig)/2), []byte{})
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		d := bytes.Clone(orig)
		if len(patch) == 0 {
			d = d[:int(off)%len(d)]
		} else {
			copy(d[int(off)%len(d):], patch)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), d, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := openAndRead(dir); err != nil {
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("open = %v, want nil or a *FileError", err)
			}
		}
	})
}

// BenchmarkVerify measures the start-up check on a 100 MB database.
func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	st, err := OpenDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	val := bytes.Repeat([]byte("v"), 1000)
	for batch := range 10 {
		ops := make([]Op, 0, 10000)
		for i := range 10000 {
			ops = append(ops, Put(TableEvents, fmt.Appendf(nil, "%02d-%06d", batch, i), val))
		}
		if err := st.Apply(context.Background(), ops); err != nil {
			b.Fatal(err)
		}
	}
	_ = st.Close()
	path := filepath.Join(dir, FileName)
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for b.Loop() {
		if _, err := Verify(path); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifyAcceptsChurnedDB: a database after heavy put/delete churn
// (splits, merges, freed pages, nested buckets) is sound: Verify must never
// refuse what bbolt wrote.
func TestVerifyAcceptsChurnedDB(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	for round := range 60 {
		var ops []Op
		for range 200 {
			k := fmt.Appendf(nil, "k%05d", rng.IntN(3000))
			tb := Tables[rng.IntN(len(Tables))]
			if rng.IntN(3) == 0 {
				ops = append(ops, Delete(tb, k))
			} else {
				ops = append(ops, Put(tb, k, bytes.Repeat([]byte{byte(round)}, rng.IntN(3000)+1)))
			}
		}
		if err := b.Apply(ctx, ops); err != nil {
			t.Fatal(err)
		}
		if round%10 == 9 {
			if _, err := Verify(filepath.Join(dir, FileName)); err != nil {
				t.Fatalf("round %d: Verify(live file) = %v", round, err)
			}
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := Verify(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatalf("Verify(churned file) = %v", err)
	}
	t.Logf("%d pages, txid %d", info.Pages, info.TxID)
}
