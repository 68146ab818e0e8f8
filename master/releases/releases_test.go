package releases

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/master/store"
)

func openStore(t *testing.T, dir string) *store.Bolt {
	t.Helper()
	st, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestYankPersists: a yank survives a restart (the store reopened), unyank
// too; Yanked answers from memory.
func TestYankPersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, dir)
	r, err := Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Yank(ctx, "storage-server", "1.2.0", "operator@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Yank(ctx, "sutra-agent", "2.0.0-rc.1", "operator@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if !r.Yanked("storage-server", "1.2.0") || r.Yanked("sutra-agent", "1.2.0") {
		t.Fatal("Yanked does not match what was yanked")
	}
	st.Close()

	st = openStore(t, dir)
	r, err = Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Yanked("storage-server", "1.2.0") || !r.Yanked("sutra-agent", "2.0.0-rc.1") {
		t.Fatalf("after restart List() = %+v, want both yanks", r.List())
	}
	if l := r.List(); len(l) != 2 || l[0].By != "operator@127.0.0.1" || l[0].At.IsZero() {
		t.Fatalf("List() = %+v", l)
	}
	if ok, err := r.Unyank(ctx, "storage-server", "1.2.0"); !ok || err != nil {
		t.Fatalf("Unyank = %v, %v", ok, err)
	}
	if ok, err := r.Unyank(ctx, "storage-server", "1.2.0"); ok || err != nil {
		t.Fatalf("second Unyank = %v, %v; want false, nil", ok, err)
	}
	st.Close()

	st = openStore(t, dir)
	defer st.Close()
	r, err = Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if r.Yanked("storage-server", "1.2.0") || !r.Yanked("sutra-agent", "2.0.0-rc.1") {
		t.Fatalf("after unyank and restart List() = %+v", r.List())
	}
}

func TestYankValidates(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	defer st.Close()
	r, err := Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"storage-server", ""}, {"storage-server", "latest"}, {"nope", "1.0.0"},
		{"storage-server", "1.0"}, {"storage-server", strings.Repeat("1", 200)}, {"storage-server", "1.0.0/../x"}} {
		if _, err := r.Yank(ctx, c[0], c[1], "op"); !errors.Is(err, ErrInvalid) {
			t.Errorf("Yank(%q, %q) = %v, want ErrInvalid", c[0], c[1], err)
		}
	}
	if len(r.List()) != 0 {
		t.Fatalf("invalid yanks were recorded: %+v", r.List())
	}
}

func FuzzYankRequest(f *testing.F) {
	for _, s := range [][2]string{{"storage-server", "1.0.0"}, {"sutra-agent", "1.0.0-rc.1+b"}, {"", ""}, {"storage-server", "\x00"},
		{"storage-server", "01.0.0"}, {"storage-server/../", "1.0.0"}, {"storage-server", "1.0.0\n"}} {
		f.Add(s[0], s[1])
	}
	ctx := context.Background()
	st, err := store.OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	r, err := Open(ctx, st)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, v string) {
		_, err := r.Yank(ctx, a, v, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Yank(%q, %q) = %v, want ErrInvalid or success", a, v, err)
			}
			if r.Yanked(a, v) {
				t.Fatalf("refused Yank(%q, %q) is yanked", a, v)
			}
			return
		}
		if !r.Yanked(a, v) {
			t.Fatalf("Yank(%q, %q) succeeded but Yanked is false", a, v)
		}
		if ok, err := r.Unyank(ctx, a, v); !ok || err != nil {
			t.Fatalf("Unyank(%q, %q) = %v, %v", a, v, ok, err)
		}
	})
}
