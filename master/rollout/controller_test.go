package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/store"
)

func openController(t *testing.T, dir string, s *sim, clk *clock) (*Controller, *store.Bolt) {
	t.Helper()
	st, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(t.Context(), Options{Store: st, Fleet: s, Now: clk.Now})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return c, st
}

func ticks(t *testing.T, c *Controller, clk *clock, n int) {
	t.Helper()
	for range n {
		c.Tick(t.Context())
		clk.Add(time.Second)
	}
}

// A crash (kill -9) after the rollout was persisted but before the
// desired version was set: the restarted controller sets it and completes.
func TestCrashBetweenTheTwoWritesResumes(t *testing.T) {
	dir := t.TempDir()
	s := newSim(5, "1.0.0")
	clk := &clock{t: t0}
	c, st := openController(t, dir, s, clk)
	r, err := c.Start(actor.With(t.Context(), "operator@10.0.0.1"), spec("1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	s.failSets = 1 << 30 // every desired-version write is lost with the "crash"
	ticks(t, c, clk, 3)
	got, _ := c.Get(r.ID)
	canary := got.Members[0].ID
	if got.Members[0].State != AgentUpgrading || s.desiredOf(canary) != "1.0.0" {
		t.Fatalf("before the crash: canary %s desired %s", got.Members[0].State, s.desiredOf(canary))
	}
	st.Close() // the master dies; nothing in memory survives
	s.failSets = 0
	c2, st2 := openController(t, dir, s, clk)
	defer st2.Close()
	ticks(t, c2, clk, 100)
	got, _ = c2.Get(r.ID)
	if got.State != Completed || got.Count(AgentPassed) != 5 || got.CreatedBy != "operator@10.0.0.1" {
		t.Fatalf("after restart: %s, %d passed, by %q", got.State, got.Count(AgentPassed), got.CreatedBy)
	}
	for _, a := range s.Agents() {
		if a.Desired.StorageServerVersion != "1.1.0" {
			t.Fatalf("%s desired %s", a.ID, a.Desired.StorageServerVersion)
		}
	}
	// every agent's version was set exactly once: the restart did not redo passed agents
	if len(s.sets) != 5 {
		t.Fatalf("%d desired-version writes: %v", len(s.sets), s.sets)
	}
}

func TestRestartMidRolloutResumesWhereItWas(t *testing.T) {
	dir := t.TempDir()
	s := newSim(5, "1.0.0")
	clk := &clock{t: t0}
	c, st := openController(t, dir, s, clk)
	r, err := c.Start(t.Context(), spec("1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	ticks(t, c, clk, 14) // canary passed, wave 1 under way
	before, _ := c.Get(r.ID)
	st.Close()
	c2, st2 := openController(t, dir, s, clk)
	defer st2.Close()
	after, _ := c2.Get(r.ID)
	if after.State != before.State || after.Count(AgentPassed) != before.Count(AgentPassed) || after.Count(AgentPassed) == 0 {
		t.Fatalf("reloaded %s/%d passed, was %s/%d", after.State, after.Count(AgentPassed), before.State, before.Count(AgentPassed))
	}
	ticks(t, c2, clk, 100)
	if got, _ := c2.Get(r.ID); got.State != Completed {
		t.Fatalf("state %s", got.State)
	}
	if n := len(s.sets); n != 5 {
		t.Fatalf("%d writes", n)
	}
}

func TestOneActivePerArtifactAndOperatorActions(t *testing.T) {
	s := newSim(4, "1.0.0")
	s.bad["2.0.0"] = true
	clk := &clock{t: t0}
	c, st := openController(t, t.TempDir(), s, clk)
	defer st.Close()
	ctx := actor.With(t.Context(), "operator@192.0.2.7")
	r, err := c.Start(ctx, spec("2.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, spec("1.1.0")); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), r.ID) {
		t.Fatalf("second rollout: %v", err)
	}
	ticks(t, c, clk, 5)
	if got, _ := c.Get(r.ID); got.State != Paused || got.Members[0].State != AgentFailed {
		t.Fatalf("state %s", got.State)
	}
	if _, err := c.Resume(ctx, "ro-nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	// the release is fixed; retry keeps the order and completes
	s.bad["2.0.0"] = false
	first, _ := c.Get(r.ID)
	if _, err := c.Retry(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	ticks(t, c, clk, 100)
	got, _ := c.Get(r.ID)
	if got.State != Completed || got.Members[0].ID != first.Members[0].ID {
		t.Fatalf("after retry: %s", got.State)
	}
	if _, err := c.Pause(ctx, r.ID); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("pause a completed rollout: %v", err)
	}
	// an operator rollback of the completed rollout takes everyone back
	if _, err := c.Rollback(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	ticks(t, c, clk, 20)
	if got, _ := c.Get(r.ID); got.State != RolledBack {
		t.Fatalf("state %s", got.State)
	}
	for _, a := range s.Agents() {
		if a.Desired.StorageServerVersion != "1.0.0" {
			t.Fatalf("%s desired %s", a.ID, a.Desired.StorageServerVersion)
		}
	}
	var named bool
	for _, e := range s.events {
		if e.Type == EventRetried && strings.Contains(e.Message, "operator@192.0.2.7") {
			named = true
		}
	}
	if !named {
		t.Fatalf("no retry event naming the operator: %v", s.events)
	}
}

type yanked map[string]bool

func (y yanked) Yanked(a, v string) bool { return y[a+"/"+v] }

func TestStartRefusesYankedAndUnpublished(t *testing.T) {
	s := newSim(2, "1.0.0")
	clk := &clock{t: t0}
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := New(t.Context(), Options{Store: st, Fleet: s, Now: clk.Now, Yanks: yanked{"storage-server/1.1.0": true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(t.Context(), spec("1.1.0")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "yanked") {
		t.Fatalf("yanked: %v", err)
	}
	if len(c.List()) != 0 {
		t.Fatal("a refused rollout was stored")
	}
}

type fakeCatalog map[string]catalog.Binary

func (f fakeCatalog) Lookup(a, v, p, arch string) (catalog.Binary, bool) {
	b, ok := f[a+"/"+v+"/"+p+"/"+arch]
	return b, ok
}

func TestStartRequiresPublishedAndSigned(t *testing.T) {
	s := newSim(2, "1.0.0")
	s.agents["agent-01"].Platform, s.agents["agent-01"].Arch = "windows", "aarch64"
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cat := fakeCatalog{"storage-server/1.1.0/linux/x86_64": {Signature: "x.minisig"}, "storage-server/1.1.0/windows/aarch64": {}}
	for _, tc := range []struct {
		signed bool
		cat    fakeCatalog
		want   string
	}{
		{false, fakeCatalog{}, "not published for linux/x86_64, windows/aarch64"},
		{true, cat, "not published for windows/aarch64 (unsigned)"},
		{false, cat, ""},
	} {
		c, err := New(t.Context(), Options{Store: st, Fleet: s, Catalog: tc.cat, RequireSigned: tc.signed})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Prepare(t.Context(), spec("1.1.0"))
		if tc.want == "" {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("signed=%v: %v, want %q", tc.signed, err, tc.want)
		}
	}
}
