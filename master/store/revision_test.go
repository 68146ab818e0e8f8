package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A database written before revisions were kept: every key is at the base
// revision, compare-and-swap works on it, and the next commit counts on.
func TestRevisionsOfAnOlderDatabase(t *testing.T) {
	ctx := context.Background()
	b, err := OpenDir(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Apply(ctx, []Op{Put(TableAgents, []byte("a"), []byte("1"))}); err != nil {
		t.Fatal(err)
	}
	// Forget the revisions, as in a file of an older master.
	err = b.db.Update(func(tx *bolt.Tx) error {
		in := tx.Bucket(internalBucket)
		if err := in.Delete(revKey); err != nil {
			return err
		}
		return in.DeleteBucket(revsBucket)
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := b.Revision(ctx); err != nil || r != baseRevision {
		t.Fatalf("Revision() = %d, %v; want %d", r, err, baseRevision)
	}
	v, r, err := b.Get(ctx, TableAgents, []byte("a"))
	if err != nil || string(v) != "1" || r != baseRevision {
		t.Fatalf("Get(a) = %q at %d, %v; want 1 at %d", v, r, err, baseRevision)
	}
	r2, err := b.ApplyIf(ctx, []Cond{IfRevision(TableAgents, []byte("a"), baseRevision)}, []Op{Put(TableAgents, []byte("a"), []byte("2"))})
	if err != nil || r2 != baseRevision+1 {
		t.Fatalf("ApplyIf(a at %d) = %d, %v; want %d", baseRevision, r2, err, baseRevision+1)
	}
	if _, err := b.ApplyIf(ctx, []Cond{IfRevision(TableAgents, []byte("a"), baseRevision)}, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("ApplyIf(stale) = %v, want ErrConflict", err)
	}
}

// Watch on the bbolt backend replays only what this process committed: an
// earlier revision is ErrCompacted, never a silent gap.
func TestWatchBeforeOpenIsCompacted(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.ApplyIf(ctx, nil, []Op{Put(TableAgents, []byte("a"), []byte("1"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if _, err := b.Watch(ctx, TableAgents, r); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Watch(from %d, before this open) = %v, want ErrCompacted", r, err)
	}
	if _, err := b.Watch(ctx, TableAgents, r+1); err != nil {
		t.Fatalf("Watch(from %d, the next revision) = %v", r+1, err)
	}
}
