package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// gcEnv is an env whose fleet has the given agent GC threshold.
type gcEnv struct {
	*env
	gc time.Duration
}

func newGCEnv(t *testing.T, gc time.Duration) *gcEnv {
	t.Helper()
	e := &gcEnv{env: &env{t: t, dir: t.TempDir(), clock: newFakeClock()}, gc: gc}
	e.reopen()
	t.Cleanup(func() { _ = e.st.Close() })
	return e
}

func (e *gcEnv) reopen() {
	e.t.Helper()
	if e.st != nil {
		if err := e.st.Close(); err != nil {
			e.t.Fatal(err)
		}
	}
	st, err := store.OpenDir(e.dir)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := New(context.Background(), Options{Store: st, Clock: e.clock, EventLogSize: 50000, MasterVersion: "1.0.0", AgentGCThreshold: e.gc})
	if err != nil {
		e.t.Fatal(err)
	}
	e.st, e.f = st, f
}

// registerMany registers n agents concurrently (group commit shares fsyncs).
func registerMany(t *testing.T, f *Fleet, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				id := fmt.Sprintf("%s%05d", prefix, i)
				r := Registration{AgentID: id, Hostname: "h-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 2,
					Nodes: []NodeStatus{{NodeID: id + "-n", State: NodeRunning, PID: 10}}}
				if _, err := f.Register(context.Background(), r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// Issue 9 item 15: 10,000 registered-then-gone agents used to stay forever
// and keep the cluster critical.
func TestAgentGCRemovesLongOfflineAgents(t *testing.T) {
	e := newGCEnv(t, 0) // default threshold: 24 h
	ctx := context.Background()
	registerMany(t, e.f, "gone", 10000)
	e.register("live", 2)

	// The gone agents go offline; the live one keeps heartbeating.
	for range 3 {
		e.clock.Advance(15 * time.Second)
		e.heartbeat("live", 1)
		e.sweep()
	}
	if c := e.f.Cluster(); c.Status != ClusterDegraded || c.OfflineAgents != 10000 || c.HealthyAgents != 1 {
		t.Fatalf("cluster after 45 s = %+v, want degraded with 10000 offline, 1 healthy", c)
	}
	start := e.f.LastSeq()
	// Just under the threshold: nothing is removed.
	for e.clock.Advance(time.Hour); e.clock.Now().Sub(newFakeClock().Now()) < 24*time.Hour-time.Minute; e.clock.Advance(time.Hour) {
		e.heartbeat("live", 1)
		e.sweep()
	}
	if got := len(e.f.Agents()); got != 10001 {
		t.Fatalf("agents before the threshold = %d, want 10001", got)
	}
	e.clock.Advance(time.Hour)
	e.heartbeat("live", 1)
	// One sweep removes at most maxGCPerSweep agents; the next ones go on.
	for range 10000/maxGCPerSweep + 1 {
		e.sweep()
	}
	agents := e.f.Agents()
	if len(agents) != 1 || agents[0].ID != "live" {
		t.Fatalf("agents after the GC threshold = %d (first %q), want only live", len(agents), agents[0].ID)
	}
	if c := e.f.Cluster(); c.Status != ClusterHealthy || c.TotalAgents != 1 || c.TotalNodes != 0 {
		t.Fatalf("cluster after GC = %+v, want healthy with 1 agent and no nodes", c)
	}
	removed := 0
	for _, ev := range e.f.Events(start, 0) {
		if ev.Type == EventAgentRemoved {
			removed++
			if !strings.Contains(ev.Message, "agent GC threshold") {
				t.Fatalf("AgentRemoved message = %q, want it to name the threshold", ev.Message)
			}
		}
	}
	if removed != 10000 {
		t.Fatalf("AgentRemoved events = %d, want 10000", removed)
	}
	if _, err := e.f.Node("gone00001-n"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node of a removed agent = %v, want ErrNotFound", err)
	}
	// The removal is durable.
	e.reopen()
	if got := len(e.f.Agents()); got != 1 {
		t.Fatalf("agents after restart = %d, want 1", got)
	}
	// A removed agent that comes back registers afresh and its running node is adopted.
	if _, err := e.f.Heartbeat(ctx, Report{AgentID: "gone00001"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("heartbeat of a removed agent = %v, want ErrNotFound (register again)", err)
	}
}

func TestAgentGCCountsFromMasterStart(t *testing.T) {
	e := newGCEnv(t, 2*time.Hour)
	e.register("a1", 1)
	// The master is down for two days; on restart every agent is loaded
	// offline with a last-seen time older than the threshold.
	e.clock.Advance(48 * time.Hour)
	e.reopen()
	e.sweep()
	if _, err := e.f.Agent("a1"); err != nil {
		t.Fatalf("agent removed right after a master restart: %v", err)
	}
	e.clock.Advance(2*time.Hour - time.Second)
	e.sweep()
	if _, err := e.f.Agent("a1"); err != nil {
		t.Fatalf("agent removed before the threshold counted from the start: %v", err)
	}
	e.clock.Advance(time.Second)
	e.sweep()
	if _, err := e.f.Agent("a1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("agent offline for the threshold since the start = %v, want removed", err)
	}
}

func TestAgentGCDisabled(t *testing.T) {
	e := newGCEnv(t, -1)
	e.register("a1", 1)
	for range 10 {
		e.clock.Advance(30 * 24 * time.Hour)
		e.sweep()
	}
	if got := e.health("a1"); got != Offline {
		t.Fatalf("health = %s, want offline (kept: GC disabled)", got)
	}
	if c := e.f.Cluster(); c.Status != ClusterCritical {
		t.Fatalf("cluster = %s, want critical (its only agent is offline)", c.Status)
	}
}

func TestAgentGCThresholdValidated(t *testing.T) {
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = Options{Store: st, AgentGCThreshold: 20 * time.Second}.Validate()
	if err == nil || !strings.Contains(err.Error(), "GC threshold") {
		t.Fatalf("Validate(GC threshold 20s < offline-after 30s) = %v, want an error naming the GC threshold", err)
	}
	if err := (Options{Store: st, AgentGCThreshold: -1}).Validate(); err != nil {
		t.Fatalf("Validate(GC disabled) = %v", err)
	}
}

// Issue 9 item 15: `sutra agents rm` refuses a live agent unless forced.
func TestUnregisterRefusesLiveAgent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.register("a1", 2)
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "a1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	err := e.f.Unregister(ctx, "a1", false)
	if !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "healthy") || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "h-a1") {
		t.Fatalf("Unregister(healthy) = %v, want ErrPrecondition naming healthy, the host and --force", err)
	}
	e.clock.Advance(20 * time.Second)
	e.sweep()
	if err := e.f.Unregister(ctx, "a1", false); !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "degraded") {
		t.Fatalf("Unregister(degraded) = %v, want ErrPrecondition", err)
	}
	if _, err := e.f.Agent("a1"); err != nil {
		t.Fatalf("refused Unregister removed the agent: %v", err)
	}
	e.clock.Advance(20 * time.Second)
	e.sweep()
	start := e.f.LastSeq()
	if err := e.f.Unregister(ctx, "a1", false); err != nil {
		t.Fatalf("Unregister(offline) = %v", err)
	}
	if got := eventTypes(e.f.Events(start, 0)); !slices.Equal(got, []string{EventAgentUnregistered}) {
		t.Fatalf("events = %v, want [AgentUnregistered]", got)
	}
	if _, err := e.f.Node("n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node of the removed agent = %v, want ErrNotFound", err)
	}
	e.register("a2", 1)
	if err := e.f.Unregister(ctx, "a2", true); err != nil {
		t.Fatalf("Unregister(healthy, force) = %v", err)
	}
	if err := e.f.Unregister(ctx, "a2", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Unregister(removed) = %v, want ErrNotFound", err)
	}
	if err := e.f.Unregister(ctx, "../x", true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Unregister(bad id) = %v, want ErrInvalid", err)
	}
}

// Issue 10 item 11: two machines with one agent id no longer share a record.
func TestRegisterInstanceID(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	reg := func(host, instance string) error {
		_, err := e.f.Register(ctx, Registration{AgentID: "web", Hostname: host, Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 2, InstanceID: instance})
		return err
	}
	if err := reg("alpha", "inst-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.Spawn(ctx, SpawnRequest{AgentID: "web", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	// The same instance re-registers (agent restart): fine.
	if err := reg("alpha", "inst-a"); err != nil {
		t.Fatalf("re-registration of the same instance = %v", err)
	}
	// Another machine claims the id while the first is alive.
	err := reg("beta", "inst-b")
	if !errors.Is(err, ErrExists) {
		t.Fatalf("registration by another instance = %v, want ErrExists", err)
	}
	for _, want := range []string{`"alpha"`, `"beta"`, "inst-a", "inst-b", "agent_id", "agent-config.toml"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if a, _ := e.f.Agent("web"); a.Hostname != "alpha" || a.InstanceID != "inst-a" {
		t.Fatalf("refused registration changed the record: host %q instance %q", a.Hostname, a.InstanceID)
	}
	// Still refused while degraded.
	e.clock.Advance(20 * time.Second)
	e.sweep()
	if err := reg("beta", "inst-b"); !errors.Is(err, ErrExists) {
		t.Fatalf("registration by another instance while degraded = %v, want ErrExists", err)
	}
	// An old agent without an instance id keeps today's behaviour.
	if err := reg("alpha", ""); err != nil {
		t.Fatalf("registration without an instance id = %v", err)
	}
	if a, _ := e.f.Agent("web"); a.InstanceID != "inst-a" {
		t.Fatalf("instance id after a registration without one = %q, want inst-a kept", a.InstanceID)
	}
	// The first machine is gone (offline): the replacement takes over.
	e.clock.Advance(time.Minute)
	e.sweep()
	start := e.f.LastSeq()
	if err := reg("beta", "inst-b"); err != nil {
		t.Fatalf("registration replacing an offline instance = %v", err)
	}
	a, _ := e.f.Agent("web")
	if a.Hostname != "beta" || a.InstanceID != "inst-b" || len(a.Desired.Nodes) != 1 {
		t.Fatalf("after replacement: host %q instance %q nodes %d; want beta, inst-b, 1 (desired nodes kept)", a.Hostname, a.InstanceID, len(a.Desired.Nodes))
	}
	if evs := e.f.Events(start, 0); len(evs) == 0 || !strings.Contains(evs[0].Message, "replaces instance inst-a") {
		t.Fatalf("events = %+v, want a registration that names the replaced instance", evs)
	}
	// Persisted: after a restart the new instance is the recorded one.
	e.restart()
	e.clock.Advance(time.Second)
	if err := reg("beta", "inst-b"); err != nil {
		t.Fatal(err)
	}
	if err := reg("alpha", "inst-a"); !errors.Is(err, ErrExists) {
		t.Fatalf("old instance after restart = %v, want ErrExists", err)
	}
	for _, bad := range []string{strings.Repeat("x", 129), "a b", "a\x00", "ü"} {
		if err := reg("beta", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("instance id %q = %v, want ErrInvalid", bad, err)
		}
	}
}
