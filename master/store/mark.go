package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// The mark (grid.db.mark, next to the database) records the store's id and
// the newest transaction this data directory is known to have committed.
// It is rewritten after commits (at most every Options.MarkInterval) and on
// Close, always after the commit it names is durable, so it never claims
// more than the file holds. At start-up a database whose last transaction is
// older than the mark, or whose id differs, was rolled back or replaced, and
// a missing database with a mark was lost: the store refuses both rather
// than starting an empty or older fleet unnoticed.
type mark struct {
	Version int       `json:"version"`
	StoreID string    `json:"store_id"`
	TxID    uint64    `json:"txid"`
	Updated time.Time `json:"updated"`
}

// MarkSuffix is appended to the database path to name its mark file.
const MarkSuffix = ".mark"

func markPath(dbPath string) string { return dbPath + MarkSuffix }

// readMark returns the zero mark when there is none.
func readMark(dbPath string) (mark, error) {
	data, err := os.ReadFile(markPath(dbPath))
	if errors.Is(err, fs.ErrNotExist) {
		return mark{}, nil
	}
	if err != nil {
		return mark{}, err
	}
	var m mark
	if err := json.Unmarshal(data, &m); err != nil {
		return mark{}, fmt.Errorf("decode %s: %w", markPath(dbPath), err)
	}
	if m.Version != 1 || m.StoreID == "" {
		return mark{}, fmt.Errorf("%s: unknown version %d or no store id", markPath(dbPath), m.Version)
	}
	return m, nil
}

// writeMark records txid (never lowering the recorded one).
func (b *Bolt) writeMark(txid uint64) error {
	b.markMu.Lock()
	defer b.markMu.Unlock()
	if txid < b.markTxID || (txid == b.markTxID && !b.markedAt.IsZero()) {
		return nil
	}
	data, err := json.Marshal(mark{Version: 1, StoreID: b.id, TxID: txid, Updated: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(markPath(b.path), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write database mark: %w", err)
	}
	b.markTxID, b.markedAt = txid, time.Now()
	return nil
}

// maybeMark rewrites the mark if the last write is older than MarkInterval.
func (b *Bolt) maybeMark(txid uint64) {
	b.markMu.Lock()
	due := time.Since(b.markedAt) >= b.opts.MarkInterval
	b.markMu.Unlock()
	if !due {
		return
	}
	if err := b.writeMark(txid); err != nil {
		b.opts.Logger.Warn("could not record the last transaction; rollback detection lags", "file", b.path, "err", err)
	}
}
