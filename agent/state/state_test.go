package state

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.Load()
	if err != nil || len(rec.Nodes) != 0 {
		t.Fatalf("Load on empty dir = %v, %v; want empty record", rec, err)
	}
	rec.Nodes["n1"] = Node{NodeID: "n1", Port: 50052, DataDir: "/d/n1", PID: 42, StartTime: 7, Checksum: "ab", Version: "1.0.0"}
	rec.Nodes["n2"] = Node{NodeID: "n2", Port: 50051, DataDir: "/d/n2"}
	if err := s.Save(rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Nodes["n1"] != rec.Nodes["n1"] || got.Nodes["n2"] != rec.Nodes["n2"] {
		t.Fatalf("Load = %+v, want %+v", got.Nodes, rec.Nodes)
	}
	if ports := got.UsedPorts(); !slices.Equal(ports, []int{50051, 50052}) {
		t.Fatalf("UsedPorts = %v, want [50051 50052]", ports)
	}
}

func TestLoadCorruptIsAnError(t *testing.T) {
	s, _ := Open(t.TempDir())
	if err := os.WriteFile(s.Path(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Load()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load of a corrupt file = %v, want ErrCorrupt", err)
	}
	if rec.Nodes == nil {
		t.Fatal("Load of a corrupt file returned a nil map")
	}
}

func TestLoadRejectsImpossibleRecords(t *testing.T) {
	for _, data := range []string{
		``,
		`null`,
		`{"version":2,"nodes":{}}`,
		`{"version":1,"nodes":{"a":{"node_id":"b"}}}`,
		`{"version":1,"nodes":{"a":{"node_id":"a","port":70000}}}`,
		`{"version":1,"nodes":{"a":{"node_id":"a","pid":-1}}}`,
		`{"version":1,"nodes":{"":{"node_id":""}}}`,
	} {
		if _, err := Parse([]byte(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Parse(%q) = %v, want ErrCorrupt", data, err)
		}
	}
	rec, err := Parse([]byte(`{"version":1,"nodes":{"a":{"node_id":"a","port":50051,"pid":7,"start_time":9,"boot_id":"b"}}}`))
	if err != nil || rec.Nodes["a"].BootID != "b" {
		t.Errorf("Parse(valid) = %+v, %v", rec, err)
	}
}

// A corrupt record is moved aside, never deleted or overwritten, and a
// second corruption in the same second does not replace the first copy.
func TestMoveAsideKeepsEveryCopy(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	now := time.Date(2026, 11, 30, 15, 4, 5, 0, time.UTC)
	var moved []string
	for i, data := range []string{"{first", "{second"} {
		if err := os.WriteFile(s.Path(), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		dst, err := s.MoveAside(now)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(filepath.Base(dst), "nodes.json.corrupt-20261130T150405Z") {
			t.Errorf("MoveAside #%d = %s, want nodes.json.corrupt-20261130T150405Z*", i, dst)
		}
		if got, _ := os.ReadFile(dst); string(got) != data {
			t.Errorf("moved copy holds %q, want %q", got, data)
		}
		moved = append(moved, dst)
	}
	if moved[0] == moved[1] {
		t.Errorf("both corrupt copies moved to %s", moved[0])
	}
	if rec, err := s.Load(); err != nil || len(rec.Nodes) != 0 {
		t.Errorf("Load after MoveAside = %+v, %v; want an empty record", rec, err)
	}
}

func TestLoadUnreadableIsNotCorrupt(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root reads any file")
	}
	s, _ := Open(t.TempDir())
	if err := os.WriteFile(s.Path(), []byte(`{"version":1,"nodes":{}}`), 0o000); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("Load of an unreadable file = %v, want a read error that is not ErrCorrupt", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"version":1,"nodes":{"a":{"node_id":"a","port":50051,"pid":7,"start_time":9,"boot_id":"b"}}}`,
		`{"version":1,"nodes":null}`, `{`, ``, `[]`, `{"version":1e400}`,
		`{"version":1,"nodes":{"a":{"node_id":"a","port":-1}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Parse error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if rec.Nodes == nil || rec.Version != 1 {
			t.Fatalf("Parse = %+v: nil nodes or version != 1", rec)
		}
		for k, n := range rec.Nodes {
			if k != n.NodeID || n.Port < 0 || n.Port > 65535 || n.PID < 0 {
				t.Fatalf("Parse accepted node %q: %+v", k, n)
			}
		}
	})
}

// Something other than a file at the record's path (a directory, a FIFO that
// would block a reader) is corrupt: moved aside, never waited on.
func TestLoadNonRegularIsCorrupt(t *testing.T) {
	s, _ := Open(t.TempDir())
	if err := os.Mkdir(s.Path(), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Load of a directory = %v, want ErrCorrupt", err)
	}
	if _, err := s.MoveAside(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Mkfifo(s.Path(), 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Load of a FIFO = %v, want ErrCorrupt", err)
	}
}
