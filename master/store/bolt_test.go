package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestApplyScan(t *testing.T) {
	ctx := context.Background()
	b, err := OpenDir(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })

	err = b.Apply(ctx, []Op{
		Put(TableAgents, []byte("b"), []byte("2")),
		Put(TableAgents, []byte("a"), []byte("1")),
		Put(TableAgents, []byte("c"), []byte("3")),
		Delete(TableAgents, []byte("c")),
		Delete(TableAgents, []byte("missing")),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = b.Scan(ctx, TableAgents, func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "a=1,b=2" {
		t.Fatalf("Scan(agents) = %v, want [a=1 b=2]", got)
	}

	// A batch with a bad op is all-or-nothing.
	err = b.Apply(ctx, []Op{Put(TableAgents, []byte("d"), []byte("4")), Put("nope", []byte("x"), []byte("y"))})
	if !errors.Is(err, ErrUnknownTable) {
		t.Fatalf("Apply(unknown table) = %v, want ErrUnknownTable", err)
	}
	n := 0
	_ = b.Scan(ctx, TableAgents, func(k, v []byte) error { n++; return nil })
	if n != 2 {
		t.Fatalf("after failed batch: %d agents, want 2 (batch must be atomic)", n)
	}
	if err := b.Scan(ctx, "nope", func(k, v []byte) error { return nil }); !errors.Is(err, ErrUnknownTable) {
		t.Fatalf("Scan(unknown table) = %v, want ErrUnknownTable", err)
	}
	stop := errors.New("stop")
	if err := b.Scan(ctx, TableAgents, func(k, v []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Scan stop = %v, want the callback's error", err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), "another sutra-master") {
		t.Fatalf("second Open = %v, want a lock error naming another sutra-master", err)
	}
	if _, err := OpenDir(""); err == nil {
		t.Fatal("OpenDir(\"\") succeeded, want an error")
	}
}

// TestCrashSafety re-executes the test binary as a child that writes batches
// as fast as it can and prints each acknowledged key; the parent kill -9s it
// mid-stream, reopens the file and checks every acknowledged key is there.
func TestCrashSafety(t *testing.T) {
	if os.Getenv("STORE_CRASH_CHILD") != "" {
		crashChild(os.Getenv("STORE_CRASH_CHILD"))
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$")
	cmd.Env = append(os.Environ(), "STORE_CRASH_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(60 * time.Second)
	for sc.Scan() {
		line := sc.Text()
		if k, ok := strings.CutPrefix(line, "ACK "); ok {
			acked = append(acked, k)
		}
		if len(acked) >= 200 || time.Now().After(deadline) {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL on unix
		t.Fatal(err)
	}
	// Keep reading: lines already written before the kill are acknowledged too.
	for sc.Scan() {
		if k, ok := strings.CutPrefix(sc.Text(), "ACK "); ok {
			acked = append(acked, k)
		}
	}
	_ = cmd.Wait()
	if len(acked) == 0 {
		t.Fatal("child acknowledged nothing")
	}

	b, err := OpenDir(dir)
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer b.Close()
	have := map[string]bool{}
	err = b.Scan(context.Background(), TableEvents, func(k, v []byte) error {
		if string(v) != "v-"+string(k) {
			return fmt.Errorf("key %s holds %q, want %q", k, v, "v-"+string(k))
		}
		have[string(k)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range acked {
		if !have[k] {
			t.Errorf("acknowledged key %s lost after kill -9", k)
		}
	}
	t.Logf("%d acknowledged, %d present after kill -9", len(acked), len(have))
}

func crashChild(dir string) {
	b, err := OpenDir(dir)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		k := fmt.Sprintf("%08d", i)
		ops := []Op{Put(TableEvents, []byte(k), []byte("v-"+k)), Put(TableMeta, []byte("last"), []byte(k))}
		if err := b.Apply(context.Background(), ops); err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("ACK", k)
	}
}
