package auth

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/store"
)

func sharedStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func checkTokenFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want+"\n" {
		t.Fatalf("%s does not hold the shared token", path)
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v, want 0600", path, fi.Mode().Perm())
		}
	}
}

// TestSharedOperatorToken: masters starting at once on one store share one
// token, made once, written to each one's admin.token (0600); a master whose
// admin.token held another token gets the shared one, with a warning that
// names the file and neither token.
func TestSharedOperatorToken(t *testing.T) {
	ctx := context.Background()
	st := sharedStore(t)
	root := t.TempDir()
	const n = 3
	toks, made, errs := make([]string, n), make([]bool, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			toks[i], made[i], errs[i] = LoadOrCreateSharedToken(ctx, st, filepath.Join(root, string(rune('a'+i))+".token"), testutil.Logger(t, slog.LevelDebug))
		})
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("master %d: %v", i, errs[i])
		}
		if toks[i] != toks[0] {
			t.Fatalf("master %d has another token than master 0", i)
		}
		if made[i] {
			created++
		}
		checkTokenFile(t, filepath.Join(root, string(rune('a'+i))+".token"), toks[0])
	}
	if created != 1 || len(toks[0]) != 43 {
		t.Fatalf("%d masters report creating the token (want 1); token of %d characters (want 43)", created, len(toks[0]))
	}
	if _, err := NewPolicy(toks[0]); err != nil {
		t.Fatal(err)
	}

	// A master that ran alone with its own token joins: the store wins.
	path := filepath.Join(root, "old.token")
	const old = "an-old-operator-token-of-this-master"
	if err := os.WriteFile(path, []byte(old+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	tok, created2, err := LoadOrCreateSharedToken(ctx, st, path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || tok != toks[0] || created2 {
		t.Fatalf("joining master: same token %v, created %v, err %v; want the shared one, not created", tok == toks[0], created2, err)
	}
	checkTokenFile(t, path, toks[0])
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "replaced") || !strings.Contains(out, path) {
		t.Fatalf("no warning naming %s that its token was replaced: %q", path, out)
	}
	if strings.Contains(out, old) || strings.Contains(out, toks[0]) {
		t.Fatalf("the log holds a token: %q", out)
	}
	// Again: the file is right, nothing to say.
	logs = testutil.SyncBuffer{}
	if _, _, err := LoadOrCreateSharedToken(ctx, st, path, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || logs.String() != "" {
		t.Fatalf("a second start: err %v, logs %q; want none", err, logs.String())
	}
}

// TestSharedOperatorTokenUploadsLocal: the first master on an empty store
// keeps the token its operator already uses.
func TestSharedOperatorTokenUploadsLocal(t *testing.T) {
	ctx := context.Background()
	st := sharedStore(t)
	dir := t.TempDir()
	local, _, err := LoadOrCreateToken(filepath.Join(dir, TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, created, err := LoadOrCreateSharedToken(ctx, st, filepath.Join(dir, TokenFile), nil)
	if err != nil || tok != local || created {
		t.Fatalf("first master with a local token: kept %v, created %v, err %v; want kept, not created", tok == local, created, err)
	}
	other := filepath.Join(t.TempDir(), TokenFile)
	if tok2, _, err := LoadOrCreateSharedToken(ctx, st, other, nil); err != nil || tok2 != local {
		t.Fatalf("second master: same token %v, err %v", tok2 == local, err)
	}
	checkTokenFile(t, other, local)
}

// TestSharedOperatorTokenDamaged: a damaged record in the store is an error
// saying what to do, and does not quote the stored value.
func TestSharedOperatorTokenDamaged(t *testing.T) {
	ctx := context.Background()
	st := sharedStore(t)
	const secret = "s3cret with a space in it"
	rec, _ := json.Marshal(tokenRecord{Token: secret})
	if err := st.Apply(ctx, []store.Op{store.Put(store.TableMeta, []byte(SharedTokenKey), rec)}); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateSharedToken(ctx, st, filepath.Join(t.TempDir(), TokenFile), nil)
	if err == nil || !strings.Contains(err.Error(), "damaged") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("damaged stored token: %v; want an error saying so, without the value", err)
	}
}

// FuzzDecodeTokenRecord: damaged store values are errors, never a panic;
// an accepted token is one the policy takes, and errors never quote it.
func FuzzDecodeTokenRecord(f *testing.F) {
	good, _ := json.Marshal(tokenRecord{Token: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", Created: time.Now()})
	for _, seed := range []string{string(good), "", "null", "[]", `""`, `{"token":1}`, `{"token":"short"}`, `{"token":"has space in the middle ok"}`,
		`{"token":"` + strings.Repeat("x", 600) + `"}`, `{"token":"abcdefghijklmnop\u0000"}`, `{"token":"abcdefghijklmnopé"}`,
		`{"token":"abcdefghijklmnopq","created":"not a time abcdefghijklmnopq"}`, strings.Repeat("[", 5000), string(good[:10])} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := DecodeTokenRecord(b)
		if err != nil {
			if tok != "" {
				t.Fatal("an error with a token")
			}
			return
		}
		if _, err := NewPolicy(tok); err != nil || validToken(tok) != nil {
			t.Fatalf("accepted a token the policy refuses: %v", err)
		}
	})
}
