package store_test

import (
	"path/filepath"
	"testing"

	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/storetest"
)

// TestContract runs the Store contract against the bbolt backend.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		dir := filepath.Join(t.TempDir(), "data")
		return func() (store.Store, error) { return store.OpenDir(dir) }
	})
}
