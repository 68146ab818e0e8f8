package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/master/actor"
	"github.com/sutragrid/sutra/master/store"
)

// TestPin: a pin sets the desired version and keeps it: set-version for
// that agent is refused (FAILED_PRECONDITION), for every agent skips it
// (listed); the pin, and the event naming who pinned, survive a restart;
// unpin lets set-version through again.
func TestPin(t *testing.T) {
	ctx := actor.With(context.Background(), "operator@127.0.0.1")
	dir := t.TempDir()
	st, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(ctx, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a1", "a2"} {
		if _, err := f.Register(ctx, goodReg(id)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := f.Pin(ctx, "a1", PinStorageServer, "1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	if a.Pins[PinStorageServer] != "1.2.0" || a.Desired.StorageServerVersion != "1.2.0" {
		t.Fatalf("after Pin: pins %v, desired %s; want 1.2.0", a.Pins, a.Desired.StorageServerVersion)
	}
	// The JSON of GET /api/agents (fleet.Agent as is).
	if b, _ := json.Marshal(a); !strings.Contains(string(b), `"pins":{"storage-server":"1.2.0"}`) {
		t.Errorf("Agent JSON lacks the pins: %s", b)
	}
	if b, _ := json.Marshal(Agent{ID: "x"}); strings.Contains(string(b), "pins") {
		t.Errorf("an unpinned Agent's JSON mentions pins: %s", b)
	}
	_, err = f.SetDesiredVersion(ctx, VersionChange{AgentID: "a1", StorageServerVersion: "2.0.0"})
	if !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "agent a1 is pinned to storage-server 1.2.0; unpin it first") {
		t.Fatalf("SetDesiredVersion on a pinned agent = %v, want FAILED_PRECONDITION naming the pin", err)
	}
	// The unpinned artifact can still change.
	if _, err := f.SetDesiredVersion(ctx, VersionChange{AgentID: "a1", AgentVersion: "0.2.0"}); err != nil {
		t.Fatalf("agent version change on a storage-server pin: %v", err)
	}
	changed, skipped, err := f.SetDesiredVersionSkipped(ctx, VersionChange{StorageServerVersion: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(skipped, []string{"a1"}) || len(changed) != 1 || changed[0].ID != "a2" {
		t.Fatalf("set-version --all: changed %d, skipped %v; want a2 changed, a1 skipped", len(changed), skipped)
	}
	st.Close()

	st, err = store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f, err = New(ctx, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	a, _ = f.Agent("a1")
	if a.Pins[PinStorageServer] != "1.2.0" || a.Desired.StorageServerVersion != "1.2.0" {
		t.Fatalf("after restart: pins %v, desired %s; want the pin kept", a.Pins, a.Desired.StorageServerVersion)
	}
	var pinned bool
	for _, e := range f.Events(0, 0) {
		if e.Type == EventAgentPinned && e.AgentID == "a1" && strings.Contains(e.Message, "by operator@127.0.0.1") && e.Actor == "operator@127.0.0.1" {
			pinned = true
		}
	}
	if !pinned {
		t.Errorf("no AgentPinned event naming operator@127.0.0.1: %+v", f.Events(0, 0))
	}
	if a, err = f.Unpin(ctx, "a1", ""); err != nil || a.Pins != nil {
		t.Fatalf("Unpin = %v, pins %v", err, a.Pins)
	}
	if _, err := f.SetDesiredVersion(ctx, VersionChange{AgentID: "a1", StorageServerVersion: "2.0.0"}); err != nil {
		t.Fatalf("set-version after unpin: %v", err)
	}
}

func FuzzPinRequest(f *testing.F) {
	for _, s := range [][3]string{{"a1", "storage-server", "1.0.0"}, {"a1", "sutra-agent", "latest"}, {"", "", ""},
		{"a1", "storage-server", "1.0.0\x00"}, {"../a", "storage-server", "1.0.0"}, {"a1", "nope", "1.0.0"}, {"a1", "storage-server", "v1.0.0"}} {
		f.Add(s[0], s[1], s[2])
	}
	st, err := store.OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	ctx := context.Background()
	fl, err := New(ctx, Options{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := fl.Register(ctx, goodReg("a1")); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, art, ver string) {
		a, err := fl.Pin(ctx, id, art, ver)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) || (fe.Kind != KindInvalid && fe.Kind != KindNotFound) {
				t.Fatalf("Pin(%q, %q, %q) = %v, want invalid or not found", id, art, ver, err)
			}
			return
		}
		if a.Pins[art] != ver || ValidatePin(id, art, ver) != nil {
			t.Fatalf("Pin(%q, %q, %q) accepted: pins %v", id, art, ver, a.Pins)
		}
		if _, err := fl.Unpin(ctx, id, art); err != nil {
			t.Fatal(err)
		}
	})
}
