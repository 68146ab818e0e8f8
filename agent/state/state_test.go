package state

import (
	"os"
	"slices"
	"testing"
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
	if err == nil {
		t.Fatal("Load of a corrupt file succeeded")
	}
	if rec.Nodes == nil {
		t.Fatal("Load of a corrupt file returned a nil map")
	}
}
