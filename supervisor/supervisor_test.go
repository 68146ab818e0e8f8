//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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

type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *recorder) of(kind EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.evs {
		fmt.Fprintf(&b, "  %s pid=%d exit=%q delay=%s msg=%q\n", e.Kind, e.PID, e.Exit, e.Delay, e.Message)
	}
	return b.String()
}

// testOptions: fast probes and restarts, deterministic backoff (no jitter).
func testOptions(t *testing.T, rec *recorder) Options {
	return Options{
		Logger:           testutil.Logger(t, slog.LevelInfo),
		LogDir:           t.TempDir(),
		LogCheckInterval: 20 * time.Millisecond,
		StopGrace:        5 * time.Second,
		PollInterval:     50 * time.Millisecond,
		Health:           HealthOptions{Interval: 100 * time.Millisecond, Timeout: time.Second, Threshold: 5 * time.Second, StartTimeout: 20 * time.Second},
		Restart: PolicyOptions{InitialDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MaxFailures: 100, Interval: time.Minute,
			Rand: func() float64 { return 0 }},
		OnEvent: rec.add,
	}
}

func newSup(t *testing.T, o Options) *Supervisor {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.StopAll(ctx); err != nil {
			t.Errorf("StopAll: %v", err)
		}
	})
	return s
}

// settle waits until every event emitted so far reached the recorder
// (OnEvent is called from the supervisor's delivery goroutine).
func settle(t *testing.T, s *Supervisor) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitEvents(ctx); err != nil {
		t.Fatalf("events not delivered: %v", err)
	}
}

func waitState(t *testing.T, n *Node, want State) Status {
	t.Helper()
	var st Status
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("node %s to be %s", n.Name(), want), func() bool {
		st = n.Status()
		return st.State == want
	})
	return st
}

func alive(pid int) bool {
	_, err := ProcessStartTime(pid)
	return err == nil
}

func stop(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStartStopGraceful(t *testing.T) {
	rec := &recorder{}
	s := newSup(t, testOptions(t, rec))
	port := testutil.FreePort(t)
	spec := helperSpec(t, "graceful", "serve", "HELPER_PORT="+strconv.Itoa(port))
	spec.HealthURL = HealthURL(port)
	n, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(spec); !errors.Is(err, ErrExists) {
		t.Errorf("second Start of the same name = %v, want ErrExists", err)
	}
	st := waitState(t, n, StateRunning)
	if st.PID == 0 || st.StartTime == 0 || st.Adopted {
		t.Errorf("running status = %+v, want pid and start time of our child", st)
	}
	stop(t, n)
	st = n.Status()
	if st.State != StateStopped || st.LastExit != "exit status 0" || st.Supervised {
		t.Errorf("after Stop status = %s %q supervised=%v, want stopped, exit status 0, unsupervised", st.State, st.LastExit, st.Supervised)
	}
	if alive(st.PID) {
		t.Errorf("pid %d still alive after Stop", st.PID)
	}
	log, _ := os.ReadFile(s.LogPath("graceful"))
	if !strings.Contains(string(log), "got SIGTERM") || !strings.Contains(string(log), "serving on") {
		t.Errorf("log does not show the graceful stop:\n%s", log)
	}
	settle(t, s)
	for _, k := range []EventKind{EventStarted, EventHealthy, EventStopping, EventStopped} {
		if len(rec.of(k)) != 1 {
			t.Errorf("%d %s events, want 1; events:\n%s", len(rec.of(k)), k, rec)
		}
	}
	if n := len(rec.of(EventRestart)); n != 0 {
		t.Errorf("%d restart events after a requested stop, want 0", n)
	}
}

func TestStopForceful(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.StopGrace = 300 * time.Millisecond
	s := newSup(t, o)
	n, err := s.Start(helperSpec(t, "stubborn", "ignore-term"))
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateRunning) // no HealthURL: running once started
	testutil.WaitFor(t, 30*time.Second, "the helper to ignore SIGTERM", func() bool {
		b, _ := os.ReadFile(s.LogPath("stubborn"))
		return strings.Contains(string(b), "ignoring SIGTERM")
	})
	stop(t, n)
	if got := n.Status().LastExit; got != "signal: killed" {
		t.Errorf("last exit = %q, want signal: killed", got)
	}
	if alive(st.PID) {
		t.Errorf("pid %d alive after forceful stop", st.PID)
	}
}

func TestProcessGroupDiesWithNode(t *testing.T) {
	for _, how := range []string{"stop", "crash"} {
		t.Run(how, func(t *testing.T) {
			rec := &recorder{}
			s := newSup(t, testOptions(t, rec))
			pidfile := filepath.Join(t.TempDir(), "grandchild.pid")
			n, err := s.Start(helperSpec(t, "parent", "grandchild", "HELPER_PIDFILE="+pidfile))
			if err != nil {
				t.Fatal(err)
			}
			st := waitState(t, n, StateRunning)
			var gpid int
			testutil.WaitFor(t, 30*time.Second, "the grandchild pid", func() bool {
				b, err := os.ReadFile(pidfile)
				gpid, _ = strconv.Atoi(string(b))
				return err == nil && gpid > 0
			})
			if !alive(gpid) {
				t.Fatalf("grandchild %d not alive", gpid)
			}
			if how == "stop" {
				stop(t, n)
			} else {
				// The node itself dies; what it started must not outlive it.
				if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				testutil.WaitFor(t, 30*time.Second, "the restart after the crash", func() bool { return len(rec.of(EventRestart)) > 0 })
			}
			testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("grandchild %d to die", gpid), func() bool { return !alive(gpid) })
		})
	}
}

func TestLogRotationCapsSize(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.LogMaxBytes = 8 << 10
	o.LogMaxFiles = 3
	o.LogCheckInterval = 10 * time.Millisecond
	o.Restart.NoRestart = true
	s := newSup(t, o)
	n, err := s.Start(helperSpec(t, "spam", "spam"))
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateFailed) // exits 0 after ~150 KiB; no restarts
	if got := st.LastLog; len(got) == 0 || got[len(got)-1] != "done" {
		t.Errorf("last log lines end with %q, want done", got)
	}
	path := s.LogPath("spam")
	var total int64
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("rotated file missing: %v", err)
		}
		total += fi.Size()
		// The cap is checked every 10 ms while ~1 KiB is written every 5 ms;
		// allow plenty of overshoot for a loaded machine.
		if fi.Size() > 64<<10 {
			t.Errorf("%s is %d bytes, want about the 8 KiB cap", filepath.Base(p), fi.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.3 exists (stat err %v), want at most 3 files", path, err)
	}
	if total >= 150*1000 {
		t.Errorf("log files hold %d bytes, want far less than the ~150 KB written", total)
	}
}

func TestCrashRestartsWithBackoff(t *testing.T) {
	rec := &recorder{}
	s := newSup(t, testOptions(t, rec))
	port := testutil.FreePort(t)
	spec := helperSpec(t, "crashy", "serve", "HELPER_PORT="+strconv.Itoa(port))
	spec.HealthURL = HealthURL(port)
	n, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	first := waitState(t, n, StateRunning)
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var st Status
	testutil.WaitFor(t, 30*time.Second, "a new healthy process", func() bool {
		st = n.Status()
		return st.State == StateRunning && st.PID != 0 && st.PID != first.PID
	})
	if st.Restarts != 1 || st.LastExit != "signal: killed" {
		t.Errorf("after one crash: restarts %d last exit %q, want 1, signal: killed", st.Restarts, st.LastExit)
	}
	settle(t, s)
	restarts := rec.of(EventRestart)
	if len(restarts) != 1 || restarts[0].Delay != 50*time.Millisecond {
		t.Fatalf("restart events = %+v, want one with delay 50ms", restarts)
	}
	if ex := rec.of(EventExited); len(ex) != 1 || ex[0].PID != first.PID {
		t.Errorf("exited events = %+v, want one for pid %d", ex, first.PID)
	}
}

func TestExitAtOnceBacksOffThenFails(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.Restart.MaxFailures = 3
	s := newSup(t, o)
	n, err := s.Start(helperSpec(t, "doomed", "exit"))
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateFailed)
	if st.Restarts != 2 || st.Failures != 3 || st.LastExit != "exit status 3" {
		t.Errorf("failed status: restarts %d failures %d exit %q, want 2, 3, exit status 3", st.Restarts, st.Failures, st.LastExit)
	}
	if !slices.Contains(st.LastLog, "fatal: exiting at once") {
		t.Errorf("last log lines %q lack the helper's last words", st.LastLog)
	}
	if len(st.LastLog) != DefaultTailLines {
		t.Errorf("%d last log lines, want %d", len(st.LastLog), DefaultTailLines)
	}
	settle(t, s)
	var delays []time.Duration
	for _, e := range rec.of(EventRestart) {
		delays = append(delays, e.Delay)
	}
	if !slices.Equal(delays, []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}) {
		t.Errorf("restart delays = %v, want [50ms 100ms]", delays)
	}
	if g := rec.of(EventGaveUp); len(g) != 1 || g[0].Failures != 3 {
		t.Errorf("gave_up events = %+v, want one with 3 failures", g)
	}
	// It stays failed: no further starts.
	time.Sleep(300 * time.Millisecond)
	settle(t, s)
	if got := len(rec.of(EventStarted)); got != 3 {
		t.Errorf("%d starts while failed, want 3", got)
	}
	// Asked again: three fresh attempts, then failed again.
	if err := n.Reset(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the second give-up", func() bool { return len(rec.of(EventGaveUp)) == 2 })
	settle(t, s)
	if got := len(rec.of(EventStarted)); got != 6 {
		t.Errorf("%d starts after Reset, want 6", got)
	}
	stop(t, n)
	if err := n.Reset(); !errors.Is(err, ErrNodeEnded) {
		t.Errorf("Reset after Stop = %v, want ErrNodeEnded", err)
	}
}

func TestStartErrorIsAFailure(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.Restart.MaxFailures = 2
	s := newSup(t, o)
	n, err := s.Start(Spec{Name: "missing", Path: filepath.Join(t.TempDir(), "no-such-binary")})
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateFailed)
	settle(t, s)
	if !strings.HasPrefix(st.LastExit, "start failed:") || len(rec.of(EventStartFailed)) != 2 {
		t.Errorf("status %+v, events:\n%s want two start failures", st, rec)
	}
}

func TestUnhealthyButAliveIsRestarted(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.Health.Threshold = 1500 * time.Millisecond
	s := newSup(t, o)
	port := testutil.FreePort(t)
	healthFile := filepath.Join(t.TempDir(), "healthy")
	if err := os.WriteFile(healthFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	spec := helperSpec(t, "sick", "serve", "HELPER_PORT="+strconv.Itoa(port), "HELPER_HEALTHFILE="+healthFile)
	spec.HealthURL = HealthURL(port)
	n, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	first := waitState(t, n, StateRunning)
	if err := os.Remove(healthFile); err != nil { // alive, but /healthz now answers 503
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the unhealthy node to be killed", func() bool { return len(rec.of(EventUnhealthy)) == 1 })
	if len(rec.of(EventHealthFailing)) == 0 {
		t.Errorf("no health_failing event before the kill; events:\n%s", rec)
	}
	if err := os.WriteFile(healthFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var st Status
	testutil.WaitFor(t, 30*time.Second, "a new healthy process", func() bool {
		st = n.Status()
		return st.State == StateRunning && st.PID != first.PID && st.PID != 0
	})
	if st.Restarts != 1 || !strings.HasPrefix(st.LastExit, "killed: unhealthy for 1.5s") {
		t.Errorf("restarts %d last exit %q, want 1 and a kill for unhealthiness", st.Restarts, st.LastExit)
	}
	if alive(first.PID) {
		t.Errorf("unhealthy pid %d still alive", first.PID)
	}
}

func TestNeverHealthyIsRestarted(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.Health.StartTimeout = 500 * time.Millisecond
	o.Restart.MaxFailures = 2
	s := newSup(t, o)
	port := testutil.FreePort(t)
	spec := helperSpec(t, "never", "serve", "HELPER_PORT="+strconv.Itoa(port), "HELPER_HEALTHFILE=/nonexistent/file")
	spec.HealthURL = HealthURL(port)
	n, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateFailed)
	settle(t, s)
	if !strings.Contains(st.LastExit, "not healthy within 500ms") || len(rec.of(EventHealthy)) != 0 {
		t.Errorf("last exit %q, events:\n%s want kills for never becoming healthy", st.LastExit, rec)
	}
}

// startDetached starts a healthy node with one supervisor and detaches it,
// as an agent with stop_nodes_on_exit = false does when it exits.
func startDetached(t *testing.T, name string) (Spec, Status) {
	t.Helper()
	rec := &recorder{}
	s1 := newSup(t, testOptions(t, rec))
	port := testutil.FreePort(t)
	spec := helperSpec(t, name, "serve", "HELPER_PORT="+strconv.Itoa(port))
	spec.HealthURL = HealthURL(port)
	n, err := s1.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateRunning)
	s1.Detach()
	settle(t, s1)
	if len(s1.Status()) != 0 || len(rec.of(EventDetached)) != 1 {
		t.Fatalf("after Detach: %d nodes, events:\n%s", len(s1.Status()), rec)
	}
	t.Cleanup(func() { _ = syscall.Kill(-st.PID, syscall.SIGKILL) })
	time.Sleep(200 * time.Millisecond)
	if !alive(st.PID) {
		t.Fatalf("detached node %d died", st.PID)
	}
	return spec, st
}

// identify returns the identity an agent records for the node of st.
func identify(t *testing.T, st Status) Identity {
	t.Helper()
	id, err := Identify(st.PID)
	if err != nil {
		t.Fatal(err)
	}
	if id.StartTime != st.StartTime {
		t.Fatalf("Identify(%d).StartTime = %d, want the status's %d", st.PID, id.StartTime, st.StartTime)
	}
	return id
}

func TestAdoptAcrossSupervisors(t *testing.T) {
	spec, st := startDetached(t, "adoptee")

	id := identify(t, st)
	rec := &recorder{}
	s2 := newSup(t, testOptions(t, rec))
	wrong := id
	wrong.StartTime++
	if _, err := s2.AdoptIdentity(spec, wrong); !errors.Is(err, ErrIdentityMismatch) {
		t.Errorf("AdoptIdentity with a wrong start time = %v, want ErrIdentityMismatch", err)
	}
	n, err := s2.AdoptIdentity(spec, id)
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, n, StateRunning)
	if got.PID != st.PID || !got.Adopted || got.StartTime != st.StartTime {
		t.Errorf("adopted status pid %d adopted %v, want pid %d adopted", got.PID, got.Adopted, st.PID)
	}
	settle(t, s2)
	if len(rec.of(EventAdopted)) != 1 || len(rec.of(EventStarted)) != 0 {
		t.Errorf("events:\n%s want one adopted and no started", rec)
	}
	stop(t, n)
	if got := n.Status(); got.State != StateStopped {
		t.Errorf("state after Stop = %s", got.State)
	}
	testutil.WaitFor(t, 30*time.Second, "the adopted process to exit", func() bool { return !alive(st.PID) })
	if _, err := s2.AdoptIdentity(spec, id); !errors.Is(err, ErrNoProcess) {
		t.Errorf("AdoptIdentity of a dead pid = %v, want ErrNoProcess", err)
	}
	b, _ := os.ReadFile(s2.LogPath("adoptee"))
	_ = b // the log lives in the first supervisor's log dir in this test
}

func TestAdoptedProcessDiesAndIsReplaced(t *testing.T) {
	spec, st := startDetached(t, "phoenix")
	rec := &recorder{}
	s2 := newSup(t, testOptions(t, rec))
	n, err := s2.AdoptIdentity(spec, identify(t, st))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, n, StateRunning)
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var got Status
	testutil.WaitFor(t, 30*time.Second, "a fresh child replacing the adopted process", func() bool {
		got = n.Status()
		return got.State == StateRunning && got.PID != 0 && got.PID != st.PID
	})
	if got.Adopted || got.Restarts != 1 || !strings.Contains(got.LastExit, "adopted process") {
		t.Errorf("status %+v, want our own child after one restart", got)
	}
}

func TestProcessStartTime(t *testing.T) {
	a, err := ProcessStartTime(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("ProcessStartTime(self) = %d, %v", a, err)
	}
	b, _ := ProcessStartTime(os.Getpid())
	if a != b {
		t.Errorf("start time changed: %d then %d", a, b)
	}
	if _, err := ProcessStartTime(0); !errors.Is(err, ErrNoProcess) {
		t.Errorf("ProcessStartTime(0) = %v, want ErrNoProcess", err)
	}
	if _, err := ProcessStartTime(1 << 30); !errors.Is(err, ErrNoProcess) {
		t.Errorf("ProcessStartTime(huge) = %v, want ErrNoProcess", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{StopGrace: -1, LogMaxBytes: -1, TailLines: -1, Health: HealthOptions{Interval: 10 * time.Second, Threshold: 5 * time.Second},
		Restart: PolicyOptions{Jitter: 3}}.Validate()
	if err == nil {
		t.Fatal("Validate = nil")
	}
	for _, want := range []string{"log dir", "stop grace", "log max bytes", "tail lines", "must exceed the health interval", "jitter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %q lacks %q", err, want)
		}
	}
	if err := (Options{LogDir: "x"}).Validate(); err != nil {
		t.Errorf("minimal options = %v", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a log dir succeeded")
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Name: "node-1", Path: "/bin/x"}, ""},
		{Spec{Name: "node-1", Path: "/bin/x", HealthURL: HealthURL(9000)}, ""},
		{Spec{Name: "../evil", Path: "/bin/x"}, "node name"},
		{Spec{Name: "", Path: ""}, "executable path"},
		{Spec{Name: "n", Path: "/x", HealthURL: "ftp://h/"}, "health URL"},
	}
	for _, tt := range tests {
		err := tt.spec.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.spec, err, tt.want)
		}
	}
}

func TestPreStartErrorIsAStartFailure(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t, rec)
	o.Restart.MaxFailures = 5
	s := newSup(t, o)
	var mu sync.Mutex
	calls := 0
	spec := helperSpec(t, "checked", "sleep")
	spec.PreStart = func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls < 3 {
			return errors.New("checksum mismatch")
		}
		return nil
	}
	n, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, n, StateRunning)
	settle(t, s)
	if st.Restarts != 2 || len(rec.of(EventStartFailed)) != 2 || !strings.Contains(rec.of(EventStartFailed)[0].Message, "checksum mismatch") {
		t.Errorf("restarts %d, events:\n%s want two pre-start failures then a start", st.Restarts, rec)
	}
}

// Issue 10 item 8: OnEvent runs on the supervisor's delivery goroutine, so a
// consumer that blocks for seconds (an fsynced write on a slow disk) delays
// neither the restarts of a crashing node nor a stop; the queue stays
// bounded, dropping (and counting) the oldest events, and delivery resumes
// in order once the consumer is back.
func TestBlockedEventConsumerDoesNotDelayRestarts(t *testing.T) {
	rec := &recorder{}
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	var mu sync.Mutex
	calls := 0
	o := testOptions(t, rec)
	o.EventQueue = 8
	o.OnEvent = func(ev Event) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			<-release // the consumer hangs on its first event
		}
		rec.add(ev)
	}
	s := newSup(t, o)
	n, err := s.Start(helperSpec(t, "crashloop", "exit"))
	if err != nil {
		t.Fatal(err)
	}
	// Each crash is a start, an exit and a restart decision: 5 restarts
	// are far more events than the queue holds.
	testutil.WaitFor(t, 30*time.Second, "5 restarts while the event consumer is blocked", func() bool { return n.Status().Restarts >= 5 })
	if d := s.DroppedEvents(); d == 0 {
		t.Errorf("DroppedEvents = 0 after %d restarts with a queue of 8 and a blocked consumer, want > 0", n.Status().Restarts)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx, "crashloop"); err != nil {
		t.Fatalf("Stop with a blocked event consumer: %v", err)
	}
	unblock()
	settle(t, s)
	stopped := rec.of(EventStopped)
	if len(stopped) != 1 {
		t.Errorf("%d stopped events delivered after the consumer came back, want 1 (the newest events are kept); events:\n%s", len(stopped), rec)
	}
	rec.mu.Lock()
	last := rec.evs[len(rec.evs)-1]
	rec.mu.Unlock()
	if last.Kind != EventStopped {
		t.Errorf("last delivered event %s, want stopped (delivery keeps order)", last.Kind)
	}
}
