//go:build linux

package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// bootLoop stands in for systemd across a power cut: before each start it
// runs the pre-start check from the previous binary, like the unit's
// "ExecStartPre=-<exe>.previous upgrade-check" (a missing binary or a
// failing check is ignored); it restarts the agent whenever it exits. When
// the agent dies of SIGKILL (the --crash-at step), it first kills -9 every
// other process of this agent (the guard): a reboot, as far as the agent can
// tell.
type bootLoop struct {
	target, data string
	args         []string
	log          testutil.SyncBuffer

	mu      sync.Mutex
	stopped bool
	cur     *exec.Cmd
	reboots int
	done    chan struct{}
}

func startBootLoop(t *testing.T, f fixture, args ...string) *bootLoop {
	l := &bootLoop{target: f.target, data: f.data, args: args, done: make(chan struct{})}
	go l.loop(400)
	t.Cleanup(func() {
		l.stop()
		killAgentProcs(f.data)
		if t.Failed() {
			t.Logf("boot loop log:\n%s", l.log.String())
		}
	})
	return l
}

func (l *bootLoop) loop(maxStarts int) {
	defer close(l.done)
	for range maxStarts {
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if prev := previousPath(l.target); fileExists(prev) {
			pre := exec.Command(prev, CheckCommand, "--data-dir", l.data)
			pre.Stdout, pre.Stderr = &l.log, &l.log
			if err := pre.Run(); err != nil {
				fmt.Fprintf(&l.log, "boot loop: pre-start check: %v (ignored)\n", err)
			}
		}
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		cmd := exec.Command(l.target, l.args...)
		cmd.Stdout, cmd.Stderr = &l.log, &l.log
		err := cmd.Start()
		if err == nil {
			l.cur = cmd
		}
		l.mu.Unlock()
		if err != nil {
			fmt.Fprintf(&l.log, "boot loop: start %s: %v\n", l.target, err)
		} else {
			err = cmd.Wait()
			l.mu.Lock()
			l.cur = nil
			l.mu.Unlock()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
					n := killAgentProcs(l.data)
					l.mu.Lock()
					l.reboots++
					l.mu.Unlock()
					fmt.Fprintf(&l.log, "boot loop: agent SIGKILLed: simulated reboot (killed %d more processes)\n", n)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *bootLoop) stop() {
	l.mu.Lock()
	l.stopped = true
	if l.cur != nil {
		_ = l.cur.Process.Signal(syscall.SIGTERM)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-time.After(20 * time.Second):
		l.mu.Lock()
		if l.cur != nil {
			_ = l.cur.Process.Kill()
		}
		l.mu.Unlock()
		<-l.done
	}
}

func (l *bootLoop) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur != nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// killAgentProcs SIGKILLs every process whose command line names dataDir
// (the agent and its guard get it as --data-dir) and returns how many.
func killAgentProcs(dataDir string) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !slices.ContainsFunc(bytes.Split(b, []byte{0}), func(a []byte) bool { return string(a) == dataDir }) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// Issue 10 item 6: every agent process is killed -9 at each step of an
// update (a simulated reboot: the guard dies too), then the service loop
// starts again, with its pre-start check. The agent always ends on a good
// binary: the new one committed when it works, the previous one restored
// (by the check, the guard being gone) when it crashes at every start.
func TestUpdateSurvivesRebootAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes for every step of an update")
	}
	steps := []string{StepRequested, StepDownloaded, StepVerified, StepNewWritten, StepKept,
		StepSwapped, StepWatching, StepGuarded, StepBooted}
	type row struct {
		release, step string
		wantVersion   string
		wantPhase     Phase
	}
	var rows []row
	for _, st := range steps {
		rows = append(rows, row{"1.1.0", st, "1.1.0", PhaseCommitted})
		if st != StepBooted { // 1.2.0 crashes before it boots
			rows = append(rows, row{"1.2.0", st, "1.0.0", PhaseRolledBack})
		}
	}
	for _, tc := range rows {
		t.Run(tc.release+"/"+tc.step, func(t *testing.T) {
			m := newTestMaster(t)
			m.publish(t, tc.release)
			m.setDesired(tc.release)
			f := install(t, "1.0.0")
			// A long window and guard grace: what ends a broken release's
			// probation here is the pre-start check counting its starts.
			l := startBootLoop(t, f, f.args(m, "--window", "60s", "--guard-grace", "60s", "--crash-at", tc.step)...)

			testutil.WaitFor(t, 90*time.Second, "an update that ends on a good, running binary", func() bool {
				s, err := ReadState(f.data)
				if err != nil || s.Phase != tc.wantPhase || !l.running() {
					return false
				}
				regs, _, _ := m.snapshot()
				return len(regs) > 0 && regs[len(regs)-1] == tc.wantVersion
			})
			l.mu.Lock()
			reboots := l.reboots
			l.mu.Unlock()
			if reboots != 1 {
				t.Errorf("%d simulated reboots, want 1 (the crash at %s did not happen?)", reboots, tc.step)
			}
			if got := testutil.SHA256(mustRead(t, f.target)); got != testutil.SHA256(mustRead(t, builds[tc.wantVersion])) {
				t.Errorf("%s is not the %s build", f.target, tc.wantVersion)
			}
			s := f.state(t)
			if tc.wantPhase == PhaseRolledBack {
				if !slices.Contains(s.FailedVersions, tc.release) || s.RolledBackBy != "check" {
					t.Errorf("rolled back by %q, failed %v; want by check with %s failed", s.RolledBackBy, s.FailedVersions, tc.release)
				}
			}
			ents, _ := os.ReadDir(filepath.Dir(f.target))
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".new") || strings.HasSuffix(e.Name(), ".tmp") {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}
