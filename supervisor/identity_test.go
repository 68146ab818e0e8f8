//go:build unix

package supervisor

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

func TestIdentifySelf(t *testing.T) {
	id, err := Identify(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if id.PID != os.Getpid() || id.StartTime == 0 || id.BootID == "" || !sameExe(id.Exe, helperPath(t)) {
		t.Errorf("Identify(self) = %+v, want pid %d, a start time, a boot id and exe %s", id, os.Getpid(), helperPath(t))
	}
	boot, err := BootID()
	if err != nil || boot != id.BootID {
		t.Errorf("BootID() = %q, %v; want %q", boot, err, id.BootID)
	}
}

// A recorded node whose pid and start time match a live process that
// started in another boot (pid reuse after a reboot), or that runs another
// executable, is not adopted, and the process is not signalled.
func TestAdoptIdentityRequiresFullMatch(t *testing.T) {
	spec, st := startDetached(t, "identity")
	cur, err := Identify(st.PID)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s2 := newSup(t, testOptions(t, rec))

	otherBoot := cur
	otherBoot.BootID = "00000000-0000-0000-0000-000000000000"
	if _, err := s2.AdoptIdentity(spec, otherBoot); !errors.Is(err, ErrIdentityMismatch) {
		t.Errorf("AdoptIdentity(other boot) = %v, want ErrIdentityMismatch", err)
	}
	otherExe := cur
	otherExe.Exe = "/usr/bin/env"
	if _, err := s2.AdoptIdentity(spec, otherExe); !errors.Is(err, ErrIdentityMismatch) {
		t.Errorf("AdoptIdentity(other executable) = %v, want ErrIdentityMismatch", err)
	}
	otherStart := cur
	otherStart.StartTime++
	if _, err := s2.AdoptIdentity(spec, otherStart); !errors.Is(err, ErrIdentityMismatch) {
		t.Errorf("AdoptIdentity(other start time) = %v, want ErrIdentityMismatch", err)
	}
	if len(s2.Status()) != 0 {
		t.Fatalf("refused adoptions left nodes: %+v", s2.Status())
	}
	time.Sleep(300 * time.Millisecond) // a wrongly adopted process would be probed and signalled
	if !alive(st.PID) {
		t.Fatalf("process %d was killed by a refused adoption", st.PID)
	}

	n, err := s2.AdoptIdentity(spec, cur)
	if err != nil {
		t.Fatalf("AdoptIdentity(full match) = %v", err)
	}
	if got := waitState(t, n, StateRunning); got.PID != st.PID || !got.Adopted {
		t.Errorf("adopted status %+v, want pid %d adopted", got, st.PID)
	}
}

// A record written before boot ids were kept: on Linux (start time counted
// from boot) it is adopted only when the command line is the node's.
func TestAdoptIdentityLegacyRecord(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("command lines are read on Linux only")
	}
	spec, st := startDetached(t, "legacy")
	legacy := Identity{PID: st.PID, StartTime: st.StartTime}
	s2 := newSup(t, testOptions(t, &recorder{}))

	other := spec
	other.Args = []string{"--port", "1"}
	if _, err := s2.AdoptIdentity(other, legacy); !errors.Is(err, ErrIdentityMismatch) {
		t.Errorf("AdoptIdentity(legacy record, other command line) = %v, want ErrIdentityMismatch", err)
	}
	if _, err := s2.AdoptIdentity(spec, legacy); err != nil {
		t.Errorf("AdoptIdentity(legacy record, same command line) = %v", err)
	}
}

func TestFindMarked(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := FindMarked("SUTRA_TEST_MARK", "x"); !errors.Is(err, ErrUnsupported) {
			t.Errorf("FindMarked = %v, want ErrUnsupported", err)
		}
		t.Skip("process environments are read on Linux only")
	}
	mark := "mark-" + strconv.Itoa(os.Getpid())
	start := func(env ...string) *exec.Cmd {
		cmd := exec.Command(helperPath(t), "-test.run=^$")
		cmd.Env = append(os.Environ(), append([]string{helperEnv + "=ignore-term"}, env...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	marked := start("SUTRA_TEST_MARK="+mark, "SUTRA_TEST_NODE=n1")
	start("SUTRA_TEST_MARK=" + mark + "-other")
	start("SUTRA_TEST_OTHER=" + mark)

	var found []Marked
	testutil.WaitFor(t, 30*time.Second, "the marked process to be found", func() bool {
		var err error
		found, err = FindMarked("SUTRA_TEST_MARK", mark)
		if err != nil {
			t.Fatal(err)
		}
		return len(found) > 0
	})
	if len(found) != 1 {
		t.Fatalf("FindMarked found %d processes, want 1: %+v", len(found), found)
	}
	m := found[0]
	want, err := Identify(marked.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.Identity != want || m.Env["SUTRA_TEST_NODE"] != "n1" || len(m.Args) != 2 || m.Args[1] != "-test.run=^$" {
		t.Errorf("found %+v args %q node %q; want %+v", m.Identity, m.Args, m.Env["SUTRA_TEST_NODE"], want)
	}
	if _, err := FindMarked("A=B", "x"); err == nil {
		t.Error("FindMarked with '=' in the key succeeded")
	}
}

func TestSameExe(t *testing.T) {
	self := helperPath(t)
	tests := []struct {
		got, want string
		ok        bool
	}{
		{self, self, true},
		{self + " (deleted)", self, true},
		{"/usr/bin/env", self, false},
		{"", self, false},
		{self, "", false},
	}
	for _, tt := range tests {
		if ok := sameExe(tt.got, tt.want); ok != tt.ok {
			t.Errorf("sameExe(%q, %q) = %v, want %v", tt.got, tt.want, ok, tt.ok)
		}
	}
}
