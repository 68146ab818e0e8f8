package tokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/store"
)

var fp = strings.Repeat("ab12", 16)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openStore(t *testing.T, dir string) *store.Bolt {
	t.Helper()
	st, err := store.OpenDir(dir)
	if err != nil {
		t.Fatalf("OpenDir: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newTokens(t *testing.T, st Store, log *testutil.SyncBuffer, mod ...func(*Options)) *Tokens {
	t.Helper()
	o := Options{Store: st, Fingerprint: fp}
	if log != nil {
		o.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		o.Logger = testutil.Logger(t, slog.LevelDebug)
	}
	for _, m := range mod {
		m(&o)
	}
	tk, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestCreateListRemoveSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, dir)
	tk := newTokens(t, st, nil)
	tok, info, err := tk.Create(ctx, Spec{Labels: map[string]string{"zone": "a"}, CreatedBy: "operator"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Fingerprint != fp || info.ID != tok.ID || info.Uses != DefaultUses || !info.Expires.Equal(t0.Add(DefaultTTL)) ||
		info.Labels["zone"] != "a" || info.CreatedBy != "operator" {
		t.Fatalf("Create = %s, %+v; want defaults (1 use, 24h) and the spec's labels", tok.Redacted(), info)
	}
	if _, err := jointoken.Parse(tok.String()); err != nil {
		t.Fatalf("created token does not parse: %v", err)
	}
	tok2, _, err := tk.Create(ctx, Spec{TTL: time.Hour, Uses: 5}, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}

	// The stored bytes hold the hash, never the secret in any form.
	secretText := strings.Split(tok.String(), ".")[3]
	_ = st.Scan(ctx, Table, func(k, v []byte) error {
		if bytes.Contains(v, []byte(secretText)) || bytes.Contains(v, tok.Secret()) || bytes.Contains(v, []byte(fmt.Sprintf("%x", tok.Secret()))) {
			t.Errorf("record %s holds the secret: %s", k, v)
		}
		return nil
	})

	// Restart: a new store handle on the same grid.db.
	st.Close()
	st = openStore(t, dir)
	tk = newTokens(t, st, nil)
	list, err := tk.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != tok.ID || list[1].ID != tok2.ID || list[1].Uses != 5 {
		t.Fatalf("List after restart = %+v, want both tokens oldest first", list)
	}
	if _, err := tk.Consume(ctx, tok.ID, tok.Secret(), t0.Add(time.Minute)); err != nil {
		t.Fatalf("Consume after restart: %v", err)
	}
	if err := tk.Remove(ctx, tok2.ID); err != nil {
		t.Fatal(err)
	}
	if err := tk.Remove(ctx, tok2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove = %v, want ErrNotFound", err)
	}
	if err := tk.Remove(ctx, "../../x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Remove(malformed) = %v, want ErrNotFound", err)
	}
	if list, _ = tk.List(ctx); len(list) != 1 || list[0].Used != 1 || list[0].State(t0.Add(time.Minute)) != "exhausted" {
		t.Fatalf("List = %+v, want the first token, used and exhausted", list)
	}
}

func TestConsumeRefusals(t *testing.T) {
	ctx := context.Background()
	var logs testutil.SyncBuffer
	tk := newTokens(t, openStore(t, t.TempDir()), &logs)
	single, _, _ := tk.Create(ctx, Spec{TTL: time.Hour}, t0)
	multi, _, _ := tk.Create(ctx, Spec{TTL: time.Hour, Uses: 3}, t0)
	removed, _, _ := tk.Create(ctx, Spec{}, t0)
	if err := tk.Remove(ctx, removed.ID); err != nil {
		t.Fatal(err)
	}
	other, _ := jointoken.Generate(fp)

	// The single-use token works once.
	info, err := tk.Consume(ctx, single.ID, single.Secret(), t0.Add(time.Minute))
	if err != nil || info.Used != 1 || !info.LastUsed.Equal(t0.Add(time.Minute)) {
		t.Fatalf("first Consume = %+v, %v", info, err)
	}
	for i := 1; i <= 3; i++ {
		if info, err := tk.Consume(ctx, multi.ID, multi.Secret(), t0); err != nil || info.Used != i {
			t.Fatalf("Consume %d of 3 = %+v, %v", i, info, err)
		}
	}
	cases := []struct {
		name, id string
		secret   []byte
		now      time.Time
		reason   string
	}{
		{"single-use twice", single.ID, single.Secret(), t0.Add(2 * time.Minute), "exhausted"},
		{"multi-use a fourth time", multi.ID, multi.Secret(), t0, "exhausted"},
		{"exhausted and expired", multi.ID, multi.Secret(), t0.Add(2 * time.Hour), "exhausted"},
		{"wrong secret", single.ID, other.Secret(), t0, "wrong secret"},
		{"empty secret", single.ID, nil, t0, "wrong secret"},
		{"removed", removed.ID, removed.Secret(), t0, "unknown or removed"},
		{"unknown", other.ID, other.Secret(), t0, "unknown or removed"},
		{"malformed id", "../../etc/passwd", other.Secret(), t0, "malformed id"},
		{"empty id", "", other.Secret(), t0, "malformed id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(logs.String())
			info, err := tk.Consume(ctx, c.id, c.secret, c.now)
			if err != ErrRefused { // the very same error, nothing to tell the cases apart
				t.Fatalf("Consume = %+v, %v; want exactly ErrRefused", info, err)
			}
			if info.ID != "" {
				t.Fatalf("a refused Consume returned %+v", info)
			}
			logged := logs.String()[before:]
			if !strings.Contains(logged, c.reason) {
				t.Fatalf("log %q does not give the reason %q", logged, c.reason)
			}
		})
	}
	// An expired but unused token.
	exp, _, _ := tk.Create(ctx, Spec{TTL: time.Minute}, t0)
	if _, err := tk.Consume(ctx, exp.ID, exp.Secret(), t0.Add(time.Minute)); err != ErrRefused || !strings.Contains(logs.String(), "reason=expired") {
		t.Fatalf("expired Consume = %v, want ErrRefused logged as expired", err)
	}
	for _, s := range []*jointoken.Token{&single, &multi, &other, &exp} {
		if strings.Contains(logs.String(), strings.Split(s.String(), ".")[3]) {
			t.Fatal("the log holds a secret")
		}
	}
}

func TestSingleUseTokenRace(t *testing.T) {
	ctx := context.Background()
	tk := newTokens(t, openStore(t, t.TempDir()), nil)
	for _, uses := range []int{1, 3} {
		tok, _, err := tk.Create(ctx, Spec{Uses: uses}, t0)
		if err != nil {
			t.Fatal(err)
		}
		var ok atomic.Int32
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() {
				_, err := tk.Consume(ctx, tok.ID, tok.Secret(), t0)
				if err == nil {
					ok.Add(1)
				} else if err != ErrRefused {
					t.Errorf("Consume: %v", err)
				}
			})
		}
		wg.Wait()
		if int(ok.Load()) != uses {
			t.Fatalf("%d-use token: %d of 12 racing Consumes succeeded", uses, ok.Load())
		}
	}
}

func TestSpecValidation(t *testing.T) {
	ctx := context.Background()
	tk := newTokens(t, openStore(t, t.TempDir()), nil)
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprint("k", i)] = "v"
	}
	for name, s := range map[string]Spec{
		"ttl too short":     {TTL: time.Second},
		"ttl too long":      {TTL: 2 * MaxTTL},
		"negative ttl":      {TTL: -time.Hour},
		"negative uses":     {Uses: -1},
		"too many uses":     {Uses: MaxUses + 1},
		"too many labels":   {Labels: many},
		"empty label key":   {Labels: map[string]string{"": "v"}},
		"long label value":  {Labels: map[string]string{"k": strings.Repeat("v", 1000)}},
		"control in label":  {Labels: map[string]string{"k": "a\nb"}},
		"control in author": {CreatedBy: "root\x1b[2J"},
		"long author":       {CreatedBy: strings.Repeat("a", 1000)},
	} {
		if _, _, err := tk.Create(ctx, s, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Create = %v, want ErrInvalid", name, err)
		}
	}
	if list, _ := tk.List(ctx); len(list) != 0 {
		t.Fatalf("refused specs stored %d tokens", len(list))
	}
	if _, err := New(Options{Fingerprint: "ABC", MaxTokens: -1}); err == nil {
		t.Fatal("New accepted bad options")
	}
}

func TestTableIsBoundedAndPruned(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	tk := newTokens(t, st, nil, func(o *Options) { o.MaxTokens = 3; o.Retain = time.Hour })
	a, _, _ := tk.Create(ctx, Spec{TTL: time.Minute}, t0) // expires t0+1m
	b, _, _ := tk.Create(ctx, Spec{TTL: 10 * time.Hour}, t0)
	if _, _, err := tk.Create(ctx, Spec{TTL: 10 * time.Hour}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Consume(ctx, b.ID, b.Secret(), t0.Add(30*time.Minute)); err != nil { // b exhausted at t0+30m
		t.Fatal(err)
	}
	// Full, and the dead tokens are within their retention: refused.
	if _, _, err := tk.Create(ctx, Spec{}, t0.Add(time.Hour)); !errors.Is(err, ErrTooMany) {
		t.Fatalf("Create in a full table = %v, want ErrTooMany", err)
	}
	// After the retention of a (died t0+1m) but not of b (died t0+30m).
	if _, _, err := tk.Create(ctx, Spec{}, t0.Add(70*time.Minute)); err != nil {
		t.Fatalf("Create after a dead token's retention = %v", err)
	}
	list, _ := tk.List(ctx)
	ids := map[string]bool{}
	for _, i := range list {
		ids[i.ID] = true
	}
	if len(list) != 3 || ids[a.ID] || !ids[b.ID] {
		t.Fatalf("after pruning: %+v; want a pruned, b kept", list)
	}
	if n, err := tk.Prune(ctx, t0.Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want b pruned", n, err)
	}
}

func TestUndecodableRecord(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	tk := newTokens(t, st, nil)
	if err := st.Apply(ctx, []store.Op{store.Put(Table, []byte("abcdefgh"), []byte("{not json"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Consume(ctx, "abcdefgh", make([]byte, 32), t0); err != ErrRefused {
		t.Fatalf("Consume of an undecodable record = %v, want ErrRefused", err)
	}
	if _, err := tk.List(ctx); err == nil {
		t.Fatal("List hid an undecodable record")
	}
	if n, err := tk.Prune(ctx, t0); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want the undecodable record dropped", n, err)
	}
}
