package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the database file inside the data directory.
const FileName = "grid.db"

// Bolt is the embedded Store: one bbolt file.
type Bolt struct {
	db *bolt.DB
}

var _ Store = (*Bolt)(nil)

// OpenDir opens (creating if needed) dir/grid.db.
func OpenDir(dir string) (*Bolt, error) {
	if dir == "" {
		return nil, errors.New("open store: empty data directory: set SUTRA_DATA_DIR")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create data directory %s: %w", dir, err)
	}
	return Open(filepath.Join(dir, FileName))
}

// Open opens (creating if needed) the bbolt file at path. It fails after a
// few seconds, instead of hanging, when another process holds the file.
func Open(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 3 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: the file is locked: is another sutra-master using this data directory? %w", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, t := range Tables {
			if _, err := tx.CreateBucketIfNotExists([]byte(t)); err != nil {
				return fmt.Errorf("create table %s: %w", t, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Apply implements Store. All ops commit in one bbolt transaction (one fsync).
func (b *Bolt) Apply(ctx context.Context, ops []Op) error {
	if len(ops) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		for _, op := range ops {
			bk := tx.Bucket([]byte(op.Table))
			if bk == nil {
				return fmt.Errorf("%w %q", ErrUnknownTable, op.Table)
			}
			if op.Value == nil {
				if err := bk.Delete(op.Key); err != nil {
					return fmt.Errorf("delete %s/%s: %w", op.Table, op.Key, err)
				}
				continue
			}
			if err := bk.Put(op.Key, op.Value); err != nil {
				return fmt.Errorf("put %s/%s: %w", op.Table, op.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store apply: %w", err)
	}
	return nil
}

// Scan implements Store.
func (b *Bolt) Scan(ctx context.Context, table string, fn func(key, value []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(table))
		if bk == nil {
			return fmt.Errorf("%w %q", ErrUnknownTable, table)
		}
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }

// Path returns the database file path.
func (b *Bolt) Path() string { return b.db.Path() }
