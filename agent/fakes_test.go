package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/supervisor"
)

// In-memory fakes of the agent's seams (seams.go), so that the agent's core
// — reconcile, node upgrades, re-adoption — runs in unit tests without
// processes, sockets or a master. The real parts run in agent_test.go and
// the e2e suites, the outer ring.

// fakeSupervisor supervises pretend nodes: a start runs the spec's PreStart
// and then "runs" (or crashes, for the checksums in crash); processes
// "alive on the machine" can be adopted on a full identity match.
type fakeSupervisor struct {
	mu           sync.Mutex
	nodes        map[string]*supervisor.Status
	specs        map[string]supervisor.Spec
	nextPID      int
	crash        map[string]bool             // checksum -> a node started from it crashes
	alive        map[int]supervisor.Identity // pid -> identity of a running process
	marked       []supervisor.Marked         // what FindMarked finds
	started      []string                    // "node@version" of every start, in order
	restartedNow []string                    // RestartNow calls, in order
	resetPending map[string]bool             // RestartNow while the node was starting
	adopted      []string                    // nodes adopted, in order
}

func newFakeSupervisor() *fakeSupervisor {
	return &fakeSupervisor{nodes: map[string]*supervisor.Status{}, specs: map[string]supervisor.Spec{},
		nextPID: 1000, crash: map[string]bool{}, alive: map[int]supervisor.Identity{}, resetPending: map[string]bool{}}
}

func specEnv(spec supervisor.Spec, key string) string {
	for _, kv := range spec.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func (s *fakeSupervisor) Start(spec supervisor.Spec) error {
	s.mu.Lock()
	if st, ok := s.nodes[spec.Name]; ok && st.Supervised {
		s.mu.Unlock()
		return fmt.Errorf("node %s is already supervised", spec.Name)
	}
	st := &supervisor.Status{Name: spec.Name, State: supervisor.StateStarting, Supervised: true, Since: time.Now()}
	s.nodes[spec.Name], s.specs[spec.Name] = st, spec
	s.mu.Unlock()
	s.launch(spec, st)
	return nil
}

// launch runs spec's pre-start check, then "runs" the node (or crashes
// it); a RestartNow that came while the check ran starts it again at
// once, as the real supervisor's reset does.
func (s *fakeSupervisor) launch(spec supervisor.Spec, st *supervisor.Status) {
	var err error
	if spec.PreStart != nil {
		err = spec.PreStart(context.Background())
	}
	s.mu.Lock()
	s.started = append(s.started, spec.Name+"@"+specEnv(spec, envVersion))
	switch {
	case err != nil:
		st.State, st.LastExit = supervisor.StateBackoff, "pre-start: "+err.Error()
	case s.crash[specEnv(spec, envChecksum)]:
		st.State, st.LastExit = supervisor.StateBackoff, "exit status 3"
	default:
		s.nextPID++
		st.State, st.PID = supervisor.StateRunning, s.nextPID
	}
	again := st.State == supervisor.StateBackoff && s.resetPending[spec.Name]
	delete(s.resetPending, spec.Name)
	s.mu.Unlock()
	if again {
		st.State = supervisor.StateStarting
		s.launch(spec, st)
	}
}

// RestartNow starts a node in backoff again at once (its pre-start check
// runs again and decides); one still starting does when it fails.
func (s *fakeSupervisor) RestartNow(id string) error {
	s.mu.Lock()
	st, ok := s.nodes[id]
	if !ok || !st.Supervised {
		s.mu.Unlock()
		return fmt.Errorf("no node %s", id)
	}
	s.restartedNow = append(s.restartedNow, id)
	if st.State == supervisor.StateStarting {
		s.resetPending[id] = true
		s.mu.Unlock()
		return nil
	}
	spec := s.specs[id]
	st.State = supervisor.StateStarting
	s.mu.Unlock()
	s.launch(spec, st)
	return nil
}

func (s *fakeSupervisor) AdoptIdentity(spec supervisor.Spec, want supervisor.Identity) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if want.Exe == "" {
		want.Exe = spec.Path
	}
	if got, ok := s.alive[want.PID]; !ok || got != want {
		return fmt.Errorf("pid %d is not the recorded process", want.PID)
	}
	s.nodes[spec.Name] = &supervisor.Status{Name: spec.Name, State: supervisor.StateRunning, PID: want.PID,
		StartTime: want.StartTime, Adopted: true, Supervised: true}
	s.specs[spec.Name] = spec
	s.adopted = append(s.adopted, spec.Name)
	return nil
}

func (s *fakeSupervisor) Stop(_ context.Context, id string) (supervisor.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.nodes[id]
	if !ok {
		return supervisor.Status{Name: id}, fmt.Errorf("no node %s", id)
	}
	delete(s.nodes, id)
	st.State, st.Supervised, st.LastExit = supervisor.StateStopped, false, "signal: terminated"
	return *st, nil
}

func (s *fakeSupervisor) Status() []supervisor.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []supervisor.Status
	for _, id := range sortedKeys(s.nodes) {
		out = append(out, *s.nodes[id])
	}
	return out
}

func (s *fakeSupervisor) NodeStatus(id string) (supervisor.Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.nodes[id]
	if !ok {
		return supervisor.Status{}, false
	}
	return *st, true
}

func (s *fakeSupervisor) Live(id string) bool {
	st, ok := s.NodeStatus(id)
	return ok && st.Supervised
}

func (s *fakeSupervisor) StopAll(ctx context.Context) error {
	for _, st := range s.Status() {
		if _, err := s.Stop(ctx, st.Name); err != nil {
			return err
		}
	}
	return nil
}

func (s *fakeSupervisor) Detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = map[string]*supervisor.Status{}
}

func (s *fakeSupervisor) WaitEvents(context.Context) error { return nil }

func (s *fakeSupervisor) FindMarked(key, value string) ([]supervisor.Marked, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []supervisor.Marked
	for _, m := range s.marked {
		if m.Env[key] == value {
			out = append(out, m)
		}
	}
	return out, nil
}

// startsOf is the starts of node id so far ("node@version").
func (s *fakeSupervisor) startsOf(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, x := range s.started {
		if strings.HasPrefix(x, id+"@") {
			out = append(out, x)
		}
	}
	return out
}

// fakeFetcher is a master's binary API and the agent's cache in memory.
type fakeFetcher struct {
	mu        sync.Mutex
	published map[string]cache.Entry // version the master serves ("latest" too) -> binary
	cached    map[string]cache.Entry // version -> cached binary
	corrupt   map[string]bool        // cached versions that fail verification
	offline   bool
	ensured   int
}

func newFakeFetcher() *fakeFetcher {
	return &fakeFetcher{published: map[string]cache.Entry{}, cached: map[string]cache.Entry{}, corrupt: map[string]bool{}}
}

// fakeBinary is the binary of version v in cache dir root.
func fakeBinary(root, v string) cache.Entry {
	sum := sha256.Sum256([]byte("storage-server " + v))
	return cache.Entry{Path: filepath.Join(root, "storage-server", v, "storage-server"), Checksum: hex.EncodeToString(sum[:]), Version: v}
}

func (f *fakeFetcher) publish(e cache.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published[e.Version] = e
}

func (f *fakeFetcher) Ensure(_ context.Context, v string) (cache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensured++
	if f.offline {
		return cache.Entry{}, errors.New("master unreachable")
	}
	e, ok := f.published[v]
	if !ok {
		return cache.Entry{}, fmt.Errorf("storage-server %s is not published", v)
	}
	f.cached[e.Version] = e
	delete(f.corrupt, e.Version)
	return e, nil
}

func (f *fakeFetcher) VerifyCached(_ context.Context, v string) (cache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.cached[v]
	if !ok || f.corrupt[v] {
		delete(f.cached, v)
		return cache.Entry{}, fmt.Errorf("storage-server %s: checksum mismatch: %w", v, cache.ErrNotCached)
	}
	return e, nil
}

func (f *fakeFetcher) NewestUsable(_ context.Context, accept func(cache.Entry) bool) (cache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vs := sortedKeys(f.cached)
	sort.Sort(sort.Reverse(sort.StringSlice(vs)))
	for _, v := range vs {
		if e := f.cached[v]; !f.corrupt[v] && (accept == nil || accept(e)) {
			return e, nil
		}
	}
	return cache.Entry{}, cache.ErrNotCached
}

func (f *fakeFetcher) Prune(...string) ([]string, error) { return nil, nil }

type fakeControlPlane struct{}

func (fakeControlPlane) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (fakeControlPlane) Close() error                  { return nil }

// fakeUpgrader is the agent's self-update; Desired returns err.
type fakeUpgrader struct{ err error }

func (fakeUpgrader) Committed() {}
func (u fakeUpgrader) Desired(_ context.Context, v string) error {
	if v == "" {
		return nil
	}
	return u.err
}
func (fakeUpgrader) Status() *controlplane.UpgradeStatus { return nil }

// core is an agent built on the fakes.
type core struct {
	*Agent
	sup     *fakeSupervisor
	fetcher *fakeFetcher
	clock   *testutil.Clock
	cfg     *config.Config
}

// testJoinToken is a well-formed join token: the tests' master is never
// reachable, so the agent only retries its enrollment in the background.
const testJoinToken = "SUTRA1." + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + ".90qqhiruldnq.45mhbadrgxvaxzwmefcqt6kwcnjxzmboe2i34uqnhwq442uc5w7a"

// coreConfig is a validated agent config in fresh directories (port range
// from 20000, storage-server downloaded).
func coreConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	data := fmt.Sprintf(`version = 1
[agent]
agent_id = "core-agent"
master_host = "127.0.0.1:1"
join_token = "`+testJoinToken+`"
cache_dir = %q
agent_data_dir = %q
max_storage_nodes = 8
[storage]
master_binary_url = "http://127.0.0.1:1"
data_path = %q
port_range_start = 20000
`, filepath.Join(dir, "cache"), filepath.Join(dir, "state"), filepath.Join(dir, "nodes"))
	cfg, err := config.Parse("agent-config.toml", []byte(data), config.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newCore builds an agent of cfg on fresh fakes; prepare may set them up
// before New runs (re-adoption happens in Run, see adopt).
func newCore(t *testing.T, cfg *config.Config, opts Options, prepare func(*fakeSupervisor, *fakeFetcher)) *core {
	t.Helper()
	c := &core{sup: newFakeSupervisor(), fetcher: newFakeFetcher(), clock: testutil.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), cfg: cfg}
	if prepare != nil {
		prepare(c.sup, c.fetcher)
	}
	opts.Config = cfg
	opts.Logger = coreLogger(t)
	var err error
	c.Agent, err = newAgent(opts, seams{sup: c.sup, fetcher: c.fetcher, cp: fakeControlPlane{}, clock: c.clock,
		portFree: func(int) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.cancelJobs()
		c.jobs.Wait()
	})
	return c
}

func coreLogger(t *testing.T) *slog.Logger { return testutil.Logger(t, slog.LevelInfo) }

// settle reconciles until the jobs it starts have ended and a round starts
// none (at most 20 rounds).
func (c *core) settle(t *testing.T) {
	t.Helper()
	for range 20 {
		if err := c.reconcile(t.Context()); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		c.jobs.Wait()
	}
}

// onVersion reports whether node id runs (per the fake) from version v, as
// recorded.
func (c *core) onVersion(id, v string) bool {
	st, ok := c.sup.NodeStatus(id)
	rec, recorded := c.rec.get(id)
	return ok && st.State == supervisor.StateRunning && recorded && rec.Version == v
}

func coreDesired(gen uint64, version string, nodes ...string) controlplane.Desired {
	return *wantNodes(gen, version, nodes...)
}
