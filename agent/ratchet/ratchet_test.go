package ratchet

import (
	"errors"
	"os"
	"testing"
)

func TestRatchetOnlyGoesUp(t *testing.T) {
	dir := t.TempDir()
	b := Open(dir)
	if err := b.Check("storage-server", "1.0.0"); err != nil {
		t.Fatalf("empty record: %v", err)
	}
	for _, v := range []string{"1.2.0", "1.1.0", "1.2.0"} {
		if _, err := b.Record("storage-server", v); err != nil {
			t.Fatal(err)
		}
	}
	// A new Book on the same dir (an agent restart) sees the record.
	b = Open(dir)
	if hi, err := b.Highest("storage-server"); err != nil || hi != "1.2.0" {
		t.Fatalf("Highest = %q, %v; want 1.2.0", hi, err)
	}
	if hi, _ := b.Highest("sutra-agent"); hi != "" {
		t.Fatalf("other artifact = %q", hi)
	}
	if err := b.Check("storage-server", "1.1.0"); !errors.Is(err, ErrRollback) {
		t.Fatalf("Check lower = %v, want ErrRollback", err)
	}
	for _, v := range []string{"1.2.0", "1.3.0"} {
		if err := b.Check("storage-server", v); err != nil {
			t.Fatalf("Check %s: %v", v, err)
		}
	}
	if _, err := b.Record("storage-server", "../x"); err == nil {
		t.Fatal("Record accepted an invalid version")
	}
}

func TestRatchetDamagedIsAnError(t *testing.T) {
	dir := t.TempDir()
	b := Open(dir)
	if err := os.WriteFile(b.Path(), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Check("storage-server", "1.0.0"); err == nil {
		t.Fatal("a damaged record disabled the check silently")
	}
	if _, err := b.Record("storage-server", "1.0.0"); err == nil {
		t.Fatal("a damaged record was overwritten")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{}`, `{"storage-server":"1.2.0"}`, `{"":"1.0.0"}`, `{"a":"../../etc"}`, `[]`, `null`, `{"a":1}`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		if len(m) > maxArtifacts {
			t.Fatalf("%d artifacts accepted", len(m))
		}
	})
}
