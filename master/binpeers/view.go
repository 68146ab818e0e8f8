package binpeers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// The view: the table in memory, for Holder, kept current by a watch.

// load reads the whole table into the view and returns the revision it
// reflects.
func (r *Registry) load(ctx context.Context) (store.Revision, error) {
	rev, err := r.st.Revision(ctx)
	if err != nil {
		return 0, fmt.Errorf("binaries table: %w", err)
	}
	claims := map[string]Claim{}
	records := map[string]map[string]Record{}
	err = r.st.Scan(ctx, store.TableBinaries, func(k, v []byte) error {
		putView(claims, records, k, v)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("binaries table: %w", err)
	}
	r.vmu.Lock()
	r.claims, r.records = claims, records
	r.vmu.Unlock()
	return rev, nil
}

// putView applies one key's value (nil: deleted) to the maps; a value
// that does not decode removes the key from the view.
func putView(claims map[string]Claim, records map[string]map[string]Record, k, v []byte) {
	name, id, err := splitKey(k)
	if err != nil {
		return
	}
	if id == "" {
		c, err := DecodeClaim(v)
		if v == nil || err != nil {
			delete(claims, name)
			return
		}
		claims[name] = c
		return
	}
	rec, err := DecodeRecord(v)
	if v == nil || err != nil {
		delete(records[name], id)
		if len(records[name]) == 0 {
			delete(records, name)
		}
		return
	}
	if records[name] == nil {
		records[name] = map[string]Record{}
	}
	records[name][id] = rec
}

// follow applies the table's changes from rev+1 until the registry
// closes; it resumes a closed watch and reloads after a compaction.
func (r *Registry) follow(rev store.Revision) {
	backoff := 100 * time.Millisecond
	for r.ctx.Err() == nil {
		ch, err := r.st.Watch(r.ctx, store.TableBinaries, rev+1)
		if errors.Is(err, store.ErrCompacted) {
			if rev, err = r.load(r.ctx); err == nil {
				continue
			}
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.log.Warn("following the binaries table; retrying", "err", err, "in", backoff)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		for c := range ch {
			r.vmu.Lock()
			putView(r.claims, r.records, c.Key, c.Value)
			r.vmu.Unlock()
			rev = c.Rev
			backoff = 100 * time.Millisecond
		}
	}
}
