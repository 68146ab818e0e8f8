package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/supervisor"
)

// The agent's core on fakes (fakes_test.go): reconcile, node upgrades and
// re-adoption carried out end to end inside the package, without processes,
// sockets or a master.

func reportOf(rep controlplane.Report, id string) (controlplane.NodeStatus, bool) {
	for _, n := range rep.Nodes {
		if n.NodeID == id {
			return n, true
		}
	}
	return controlplane.NodeStatus{}, false
}

// A desired node is started from the downloaded binary on a free (or its
// fixed) port; a node no longer desired is stopped, its record forgotten
// and reported stopped until a heartbeat carried the report or the report
// expired.
func TestCoreSpawnStopAndForget(t *testing.T) {
	c := newCore(t, coreConfig(t), Options{}, func(_ *fakeSupervisor, f *fakeFetcher) {
		f.publish(fakeBinary("/nowhere", "1.0.0"))
	})
	c.onDesired(coreDesired(1, "1.0.0", "a", "b:7100", "c"))
	c.settle(t)
	for _, id := range []string{"a", "b", "c"} {
		if !c.onVersion(id, "1.0.0") {
			t.Fatalf("node %s not running on 1.0.0 (starts %v)", id, c.sup.startsOf(id))
		}
	}
	ports := map[string]int{}
	for id, n := range c.rec.snapshot() {
		ports[id] = n.Port
	}
	if want := map[string]int{"a": 20000, "b": 7100, "c": 20001}; !reflect.DeepEqual(ports, want) {
		t.Errorf("ports %v, want %v", ports, want)
	}
	spec := c.sup.specs["a"]
	if spec.Path != fakeBinary("/nowhere", "1.0.0").Path || specEnv(spec, envAgentData) != c.recovery.markerDir || specEnv(spec, "STORAGE_PORT") != "20000" {
		t.Errorf("node a spec %+v: want the cached binary, the agent's marker and its port", spec)
	}
	if got := c.report().AppliedGeneration; got != 1 {
		t.Errorf("applied generation %d, want 1", got)
	}

	c.onDesired(coreDesired(2, "1.0.0", "b", "c"))
	c.settle(t)
	if _, ok := c.sup.NodeStatus("a"); ok {
		t.Fatal("node a still supervised after it was no longer desired")
	}
	if _, ok := c.rec.get("a"); ok {
		t.Error("node a still recorded after it stopped")
	}
	onDisk, err := c.store.Load()
	if err != nil || len(onDisk.Nodes) != 2 {
		t.Errorf("record on disk: %v (%v), want b and c", onDisk.Nodes, err)
	}
	rep := c.report()
	if ns, ok := reportOf(rep, "a"); !ok || ns.State != supervisor.StateStopped || ns.LastExit == "" {
		t.Errorf("report of a = %+v (%v), want stopped with its last exit", ns, ok)
	}
	c.onHeartbeat() // the master saw it
	if _, ok := reportOf(c.report(), "a"); ok {
		t.Error("a still reported stopped after a heartbeat carried it")
	}

	// A stop whose report no heartbeat carried expires.
	c.onDesired(coreDesired(3, "1.0.0", "c"))
	c.settle(t)
	if _, ok := reportOf(c.report(), "b"); !ok {
		t.Fatal("b not reported stopped")
	}
	c.clock.Advance(stoppedReportFor + time.Second)
	if _, ok := reportOf(c.report(), "b"); ok {
		t.Error("b still reported stopped after stoppedReportFor")
	}

	// The freed port is given out again.
	c.onDesired(coreDesired(4, "1.0.0", "c", "d"))
	c.settle(t)
	if n, _ := c.rec.get("d"); n.Port != 20000 {
		t.Errorf("new node d on port %d, want the freed 20000", n.Port)
	}
}

// A new node whose binary cannot be had waits, reported pending; when it is
// no longer desired before it ever started it is reported stopped.
func TestCoreNodeWithoutBinaryWaitsAndIsReportedStoppedBeforeStart(t *testing.T) {
	c := newCore(t, coreConfig(t), Options{}, nil) // nothing published, nothing cached
	c.onDesired(coreDesired(1, "1.0.0", "a"))
	c.settle(t)
	if ns, ok := reportOf(c.report(), "a"); !ok || ns.State != supervisor.StateBackoff || ns.Message != waitingForBinary {
		t.Fatalf("report of a = %+v (%v), want backoff, %q", ns, ok, waitingForBinary)
	}
	c.onDesired(coreDesired(2, "1.0.0"))
	c.settle(t)
	ns, ok := reportOf(c.report(), "a")
	if !ok || ns.State != supervisor.StateStopped || !strings.Contains(ns.Message, "stopped before it started") {
		t.Errorf("report of a = %+v (%v), want stopped before it started", ns, ok)
	}
	if len(c.pending.snapshot()) != 0 || len(c.sup.started) != 0 {
		t.Errorf("pending %v, starts %v; want none", c.pending.snapshot(), c.sup.started)
	}
}

// A new desired version moves the nodes one at a time, each after the one
// before it became healthy.
func TestCoreUpgradesOneNodeAtATime(t *testing.T) {
	c := newCore(t, coreConfig(t), Options{}, func(_ *fakeSupervisor, f *fakeFetcher) {
		f.publish(fakeBinary("/nowhere", "1.0.0"))
		f.publish(fakeBinary("/nowhere", "2.0.0"))
	})
	c.onDesired(coreDesired(1, "1.0.0", "a", "b"))
	c.settle(t)
	c.onDesired(coreDesired(2, "2.0.0", "a", "b"))
	// Round 1 downloads 2.0.0; round 2 upgrades a; round 3 b.
	for round, want := range []string{"a@1.0.0 b@1.0.0", "a@2.0.0 b@1.0.0", "a@2.0.0 b@2.0.0"} {
		if err := c.reconcile(t.Context()); err != nil {
			t.Fatal(err)
		}
		c.jobs.Wait()
		var got []string
		for _, id := range []string{"a", "b"} {
			n, _ := c.rec.get(id)
			got = append(got, id+"@"+n.Version)
		}
		if strings.Join(got, " ") != want {
			t.Fatalf("after round %d: %v, want %s", round+1, got, want)
		}
	}
	if ns, _ := reportOf(c.report(), "a"); !strings.Contains(ns.Message, "upgraded from storage-server 1.0.0 to 2.0.0") {
		t.Errorf("report of a: message %q, want the upgrade noted", ns.Message)
	}
	if got := c.sup.startsOf("b"); !reflect.DeepEqual(got, []string{"b@1.0.0", "b@2.0.0"}) {
		t.Errorf("starts of b %v", got)
	}
}

// A node that is not healthy on the new version is put back on its previous
// one, the version is recorded as failed (on disk) and used for nothing —
// not the other nodes, not new nodes — until the master names another
// version and then it again.
func TestCoreFailedUpgradeRollsBackAndIsNotRetried(t *testing.T) {
	bad := fakeBinary("/nowhere", "2.0.0")
	c := newCore(t, coreConfig(t), Options{}, func(s *fakeSupervisor, f *fakeFetcher) {
		f.publish(fakeBinary("/nowhere", "1.0.0"))
		f.publish(bad)
		s.crash[bad.Checksum] = true
	})
	c.onDesired(coreDesired(1, "1.0.0", "a", "b"))
	c.settle(t)
	c.onDesired(coreDesired(2, "2.0.0", "a", "b"))
	c.settle(t)

	if got := c.sup.startsOf("a"); !reflect.DeepEqual(got, []string{"a@1.0.0", "a@2.0.0", "a@1.0.0"}) {
		t.Errorf("starts of a %v, want 1.0.0, the failed 2.0.0, back to 1.0.0", got)
	}
	if !c.onVersion("a", "1.0.0") || !c.onVersion("b", "1.0.0") {
		t.Errorf("a and b not both back on 1.0.0")
	}
	if got := c.sup.startsOf("b"); len(got) != 1 {
		t.Errorf("starts of b %v, want it untouched", got)
	}
	if ns, _ := reportOf(c.report(), "a"); !strings.Contains(ns.Message, "failed and was rolled back to 1.0.0") {
		t.Errorf("report of a: message %q, want the rollback noted", ns.Message)
	}
	onDisk, err := c.store.LoadFailures()
	if f, ok := onDisk[bad.Checksum]; err != nil || !ok || f.Generation != 2 || f.Desired != "2.0.0" {
		t.Fatalf("failure record on disk %v (%v), want 2.0.0 failed at generation 2", onDisk, err)
	}

	// A spawn at a later generation still naming 2.0.0 starts from 1.0.0.
	c.onDesired(coreDesired(3, "2.0.0", "a", "b", "c"))
	c.settle(t)
	if !c.onVersion("c", "1.0.0") {
		t.Errorf("new node c starts %v, want 1.0.0 (2.0.0 failed here)", c.sup.startsOf("c"))
	}
	if got := c.sup.startsOf("a"); len(got) != 3 {
		t.Errorf("a restarted again at generation 3: %v", got)
	}

	// A restarted agent remembers it.
	c2 := newCore(t, c.cfg, Options{}, func(_ *fakeSupervisor, f *fakeFetcher) { f.publish(bad) })
	if !c2.failures.failed(bad.Checksum) {
		t.Error("a restarted agent forgot the failed version")
	}

	// Another version, then 2.0.0 again: one new attempt.
	c.onDesired(coreDesired(4, "1.0.0", "a", "b", "c"))
	c.settle(t)
	c.sup.mu.Lock()
	delete(c.sup.crash, bad.Checksum) // fixed meanwhile
	c.sup.mu.Unlock()
	c.onDesired(coreDesired(5, "2.0.0", "a", "b", "c"))
	c.settle(t)
	for _, id := range []string{"a", "b", "c"} {
		if !c.onVersion(id, "2.0.0") {
			t.Errorf("node %s not on 2.0.0 after it was named again (starts %v)", id, c.sup.startsOf(id))
		}
	}
	if c.failures.failed(bad.Checksum) {
		t.Error("failure still recorded after the new attempt was allowed")
	}
}

// Offline, new nodes start from the newest verified cached binary that never
// failed here.
func TestCoreOfflineUsesNewestCachedThatNeverFailed(t *testing.T) {
	v1, v2, v3 := fakeBinary("/nowhere", "1.0.0"), fakeBinary("/nowhere", "2.0.0"), fakeBinary("/nowhere", "3.0.0")
	c := newCore(t, coreConfig(t), Options{}, func(_ *fakeSupervisor, f *fakeFetcher) {
		f.offline = true
		f.cached = map[string]cache.Entry{"1.0.0": v1, "2.0.0": v2, "3.0.0": v3}
		f.corrupt["3.0.0"] = true
	})
	c.failures.record(state.Failure{Checksum: v2.Checksum, Version: "2.0.0", Desired: "2.0.0", Generation: 1, Reason: "crashed"})
	c.onDesired(coreDesired(2, "4.0.0", "a"))
	c.settle(t)
	if !c.onVersion("a", "1.0.0") {
		t.Errorf("offline, node a starts %v, want 1.0.0 (2.0.0 failed here, 3.0.0 is corrupt)", c.sup.startsOf("a"))
	}
}

// A cached binary that fails verification before a start is dropped and
// that version fetched again at once; the node, in backoff on the failed
// check, starts as soon as the binary it ran verifies again, without
// waiting out its backoff (found by the chaos soak, seed 31: a node whose
// backoff had grown waited 55 s after its cache was repaired).
func TestCoreCorruptCachedBinaryIsFetchedAgain(t *testing.T) {
	v1 := fakeBinary("/nowhere", "1.0.0")
	c := newCore(t, coreConfig(t), Options{}, func(_ *fakeSupervisor, f *fakeFetcher) { f.publish(v1) })
	c.onDesired(coreDesired(1, "1.0.0", "a"))
	if err := c.reconcile(t.Context()); err != nil { // starts the download
		t.Fatal(err)
	}
	c.jobs.Wait()
	c.fetcher.mu.Lock()
	c.fetcher.corrupt["1.0.0"] = true // corrupted on disk after the download
	ensured := c.fetcher.ensured
	c.fetcher.mu.Unlock()
	if err := c.reconcile(t.Context()); err != nil { // starts a: the pre-start check fails
		t.Fatal(err)
	}
	c.jobs.Wait()
	c.fetcher.mu.Lock()
	again := c.fetcher.ensured > ensured
	c.fetcher.mu.Unlock()
	if !again {
		t.Fatal("the corrupt binary's version was not fetched again")
	}
	c.sup.mu.Lock()
	restarted := slices.Clone(c.sup.restartedNow)
	starts := slices.Clone(c.sup.started)
	c.sup.mu.Unlock()
	st, _ := c.sup.NodeStatus("a")
	if !slices.Equal(restarted, []string{"a"}) || st.State != supervisor.StateRunning || st.PID == 0 {
		t.Fatalf("node a %s pid %d (%q), restarted at once %v; want it running again right after the re-fetch", st.State, st.PID, st.LastExit, restarted)
	}
	if !slices.Equal(starts, []string{"a@1.0.0", "a@1.0.0"}) {
		t.Errorf("starts %v, want the failed one and the one after the re-fetch, both 1.0.0", starts)
	}
	c.settle(t)
	if c.binary.current() == nil {
		t.Errorf("no binary for new nodes after the corrupt entry was fetched again")
	}
}

// A node whose binary fails verification is not restarted by the re-fetch
// when what comes back is another build (another checksum): the node waits
// for the agent's next plan instead of running what it was not started
// from.
func TestCoreRefetchOfAnotherBuildDoesNotRestart(t *testing.T) {
	v1 := fakeBinary("/nowhere", "1.0.0")
	c := newCore(t, coreConfig(t), Options{}, func(_ *fakeSupervisor, f *fakeFetcher) { f.publish(v1) })
	c.onDesired(coreDesired(1, "1.0.0", "a"))
	if err := c.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.jobs.Wait()
	c.fetcher.mu.Lock()
	c.fetcher.corrupt["1.0.0"] = true
	rebuilt := v1
	rebuilt.Checksum = strings.Repeat("0", 64) // 1.0.0 published again as another file
	c.fetcher.published["1.0.0"] = rebuilt
	c.fetcher.mu.Unlock()
	if err := c.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.jobs.Wait()
	c.sup.mu.Lock()
	restarted := slices.Clone(c.sup.restartedNow)
	c.sup.mu.Unlock()
	if len(restarted) != 0 {
		t.Errorf("node restarted at once on a re-fetched binary with another checksum: %v", restarted)
	}
}

// A self-update that needs a restart makes the loop return
// ErrRestartRequired.
func TestCoreSelfUpdateRestart(t *testing.T) {
	c := newCore(t, coreConfig(t), Options{Upgrader: fakeUpgrader{err: fmt.Errorf("apply 2.0.0: %w", ErrRestartRequired)}}, nil)
	d := coreDesired(1, "")
	d.AgentVersion = "2.0.0"
	c.onDesired(d)
	if err := c.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.jobs.Wait()
	if err := c.reconcile(t.Context()); !errors.Is(err, ErrRestartRequired) {
		t.Errorf("reconcile after the self-update = %v, want ErrRestartRequired", err)
	}
}

// Re-adoption at start: a recorded node is re-adopted only on a full
// identity match (a pid reused by another process is not: the node is
// started again); a running process carrying this agent's marker that the
// record lacks is adopted and recorded, a younger duplicate and a process
// running an untrusted executable are not.
func TestCoreReadoption(t *testing.T) {
	cfg := coreConfig(t)
	v1 := fakeBinary(cfg.Agent.CacheDir, "1.0.0")
	st, err := state.Open(cfg.Agent.AgentDataDir)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := supervisor.BootID()
	node := func(id string, port, pid int, start uint64) state.Node {
		return state.Node{NodeID: id, Port: port, DataDir: filepath.Join(cfg.Storage.DataPath, id), PID: pid, StartTime: start,
			BootID: boot, BinaryPath: v1.Path, Checksum: v1.Checksum, Version: v1.Version}
	}
	rec := state.Record{Nodes: map[string]state.Node{
		"same":    node("same", 20000, 100, 5),
		"reused":  node("reused", 20001, 200, 6), // pid 200 is another process now
		"stopped": node("stopped", 20002, 0, 0),
	}}
	if err := st.Save(rec); err != nil {
		t.Fatal(err)
	}
	dataDir, _ := filepath.Abs(cfg.Agent.AgentDataDir)
	marked := func(pid int, start uint64, id, exe string) supervisor.Marked {
		return supervisor.Marked{
			Identity: supervisor.Identity{PID: pid, StartTime: start, BootID: boot, Exe: exe},
			Env: map[string]string{envAgentData: dataDir, envNodeID: id, "STORAGE_PORT": "20005",
				"STORAGE_PATH": filepath.Join(cfg.Storage.DataPath, id), envVersion: "1.0.0", envChecksum: v1.Checksum},
		}
	}
	c := newCore(t, cfg, Options{}, func(s *fakeSupervisor, f *fakeFetcher) {
		f.cached["1.0.0"] = v1 // the master is not reached: "latest" falls back to the cache
		s.alive[100] = supervisor.Identity{PID: 100, StartTime: 5, BootID: boot, Exe: v1.Path}
		s.alive[200] = supervisor.Identity{PID: 200, StartTime: 99, BootID: boot, Exe: "/usr/bin/other"}
		s.alive[300] = supervisor.Identity{PID: 300, StartTime: 10, BootID: boot, Exe: v1.Path}
		s.alive[301] = supervisor.Identity{PID: 301, StartTime: 11, BootID: boot, Exe: v1.Path}
		s.alive[302] = supervisor.Identity{PID: 302, StartTime: 12, BootID: boot, Exe: "/tmp/evil"}
		s.marked = []supervisor.Marked{
			marked(301, 11, "lost", v1.Path), // the younger copy first: order must not matter
			marked(300, 10, "lost", v1.Path),
			marked(302, 12, "evil", "/tmp/evil"),
		}
	})
	c.adopt()
	if !slices.Equal(c.sup.adopted, []string{"same", "lost"}) {
		t.Fatalf("adopted %v, want same (identity match) and lost (marked, oldest copy)", c.sup.adopted)
	}
	if s, _ := c.sup.NodeStatus("lost"); s.PID != 300 {
		t.Errorf("lost adopted as pid %d, want the oldest copy 300", s.PID)
	}
	if n, ok := c.rec.get("lost"); !ok || n.PID != 300 || n.Port != 20005 || n.Version != "1.0.0" {
		t.Errorf("lost recorded as %+v (%v), want pid 300 on port 20005, version 1.0.0", n, ok)
	}
	if _, ok := c.sup.NodeStatus("evil"); ok {
		t.Error("a process running an untrusted executable was adopted")
	}

	// Before the master answers, the recorded running nodes are kept: the
	// one whose pid was reused is started anew, the stopped one is not.
	c.settle(t)
	if got := c.sup.startsOf("reused"); !slices.Equal(got, []string{"reused@1.0.0"}) {
		t.Errorf("starts of reused %v, want one fresh start", got)
	}
	if got := c.sup.startsOf("same"); len(got) != 0 {
		t.Errorf("the re-adopted node was started again: %v", got)
	}
	if got := c.sup.startsOf("stopped"); len(got) != 0 {
		t.Errorf("a node recorded stopped was started before the master asked: %v", got)
	}
	if n, _ := c.rec.get("reused"); n.Port != 20001 {
		t.Errorf("reused restarted on port %d, want its recorded 20001", n.Port)
	}
	if _, err := os.Stat(filepath.Join(cfg.Storage.DataPath, "reused")); err != nil {
		t.Errorf("data dir of reused: %v", err)
	}
}

// A version that cannot be resolved (master unreachable, signature refused)
// is not asked for again at every reconcile: failures in a row wait 2 s,
// 4 s, … up to a minute (the clock, not the reconcile rate, decides), and a
// success forgets them.
func TestCoreFailedFetchBacksOff(t *testing.T) {
	c := newCore(t, coreConfig(t), Options{}, func(_ *fakeSupervisor, f *fakeFetcher) { f.offline = true })
	ensured := func() int {
		c.fetcher.mu.Lock()
		defer c.fetcher.mu.Unlock()
		return c.fetcher.ensured
	}
	c.onDesired(coreDesired(2, "1.0.0", "a"))
	c.settle(t) // 20 reconciles at one instant
	if n := ensured(); n != 1 {
		t.Fatalf("20 reconciles without time passing fetched %d times, want 1", n)
	}
	c.clock.Advance(time.Second)
	c.settle(t)
	if n := ensured(); n != 1 {
		t.Fatalf("1 s after the first failure: %d fetches, want still 1 (waits 2 s)", n)
	}
	c.clock.Advance(time.Second + time.Millisecond)
	c.settle(t)
	if n := ensured(); n != 2 {
		t.Fatalf("after 2 s: %d fetches, want 2", n)
	}
	c.clock.Advance(3 * time.Second)
	c.settle(t)
	if n := ensured(); n != 2 {
		t.Fatalf("3 s after the second failure: %d fetches, want still 2 (waits 4 s)", n)
	}
	for range 10 {
		c.clock.Advance(time.Minute)
		c.settle(t)
	}
	if n := ensured(); n != 12 {
		t.Fatalf("then one try a minute for 10 minutes: %d fetches in all, want 12 (the wait is capped at a minute)", n)
	}
	c.fetcher.mu.Lock()
	c.fetcher.offline = false
	c.fetcher.published["1.0.0"] = fakeBinary("/nowhere", "1.0.0")
	c.fetcher.mu.Unlock()
	c.clock.Advance(time.Minute)
	c.settle(t)
	if !c.onVersion("a", "1.0.0") {
		t.Fatalf("once the master answers, node a starts %v, want 1.0.0", c.sup.startsOf("a"))
	}
	if b := &c.binary; b.failures != 0 || b.failVersion != "" {
		t.Errorf("after a success the failures are kept: %d for %q", b.failures, b.failVersion)
	}
}
