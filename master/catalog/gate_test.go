package catalog

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeGate refuses the names in no and records withdrawals.
type fakeGate struct {
	mu        sync.Mutex
	no        map[string]bool
	admitted  []string
	withdrawn []string
}

func (g *fakeGate) Admit(name, sha256 string, size int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.no[name] {
		return errors.New("sha256 differs from master m1's")
	}
	g.admitted = append(g.admitted, name)
	return nil
}

func (g *fakeGate) Withdrawn(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.withdrawn = append(g.withdrawn, name)
}

func (g *fakeGate) set(name string, refuse bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.no[name] = refuse
}

func (g *fakeGate) withdrawals() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.withdrawn...)
}

// Issue 16: a Gate keeps a refused binary out (not listed, not
// downloadable, the reason a Skipped event); SetGate withdraws what it
// refuses among the published; the gate hears of withdrawals; a refused
// file is offered again on the next look.
func TestGate(t *testing.T) {
	const ok, no = "storage-server-1.0.0-linux-x86_64", "storage-server-1.1.0-linux-x86_64"
	dir := t.TempDir()
	writeOld(t, dir, ok, []byte("ok"))
	writeOld(t, dir, no, []byte("no"))
	rec := &recorder{}
	g := &fakeGate{no: map[string]bool{no: true}}
	o := testOptions(dir, "")
	o.OnEvent, o.Gate = rec.add, g
	c := open(t, o)
	if _, found := c.ByFilename(ok); !found {
		t.Fatalf("%s not published, want it admitted", ok)
	}
	if _, found := c.ByFilename(no); found {
		t.Fatalf("%s published although the gate refused it", no)
	}
	if _, _, err := c.Open(no); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open(%s) = %v, want ErrNotFound", no, err)
	}
	if reason, found := rec.skipped(no); !found || reason == "" {
		t.Fatalf("no Skipped event for %s (%q)", no, reason)
	}
	// SetGate re-admits what is published: the refused one is withdrawn.
	g2 := &fakeGate{no: map[string]bool{ok: true}}
	c.SetGate(g2)
	if _, found := c.ByFilename(ok); found {
		t.Fatalf("%s still published after the new gate refused it", ok)
	}
	// The refused file is offered again when looked at (rescan, change).
	g2.set(ok, false)
	c.suspect(ok)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, found := c.ByFilename(ok); found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not published once the gate admits it", ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A deletion is a withdrawal the gate hears of.
	if err := os.Remove(filepath.Join(dir, ok)); err != nil {
		t.Fatal(err)
	}
	for len(g2.withdrawals()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the gate did not hear of %s's withdrawal", ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if w := g2.withdrawals(); w[0] != ok {
		t.Fatalf("withdrawals = %v, want [%s]", w, ok)
	}
}
