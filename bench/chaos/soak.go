//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Fault and operation kinds (the table's rows).
const (
	kKillMaster       = "kill-master"
	kKillAgent        = "kill-agent"
	kKillNode         = "kill-node"
	kSigstop          = "sigstop"
	kCorruptCache     = "corrupt-cache"
	kFullDisk         = "full-disk"
	kMasterMidWave    = "master-restart-mid-rollout"
	kKillEtcdLeader   = "kill-etcd-leader"
	opReplaceNode     = "op:replace-node"
	opSetVersion      = "op:set-version"
	opRollout         = "op:rollout"
	rolloutEvery      = 2 * time.Minute
	operatorEvery     = 45 * time.Second
	initialConverge   = 3 * time.Minute
	rolloutBound      = 5 * time.Minute
	leakSlackRatio    = 1.5
	leakSlackAbsolute = 30
)

// event is one fault or operation of the run, in order.
type event struct {
	at        time.Duration // since the soak began
	kind      string
	detail    string
	fault     bool
	converged time.Duration // from the fault's end to convergence
	failed    bool          // not converged within the bound
}

// chaos is one soak run.
type chaos struct {
	o     options
	g     *grid
	m     *model
	rng   *rand.Rand
	start time.Time

	events     []event
	lost       []lostWrite
	duplicates map[string]bool
	orphans    map[string]bool
	failures   []string // convergence failures and leaks, described
	baseline   map[string]usage
	rollouts   map[string]int // terminal state -> count
}

func run(ctx context.Context, o options) (bool, error) {
	if o.Seed == 0 {
		o.Seed = int64(rand.Uint64() >> 1)
		if o.Seed == 0 {
			o.Seed = 1
		}
	}
	fmt.Printf("chaos: seed %d\n", o.Seed)
	root, err := workDir(o)
	if err != nil {
		return false, err
	}
	if o.Out == "" && !o.Keep {
		say("working directory %s (removed at the end; -keep or -out DIR keeps it)", root)
	} else {
		say("working directory %s (kept; logs in %s)", root, filepath.Join(root, "logs"))
	}
	c := &chaos{o: o, m: newModel(), rng: rand.New(rand.NewPCG(uint64(o.Seed), 0x5eed)),
		duplicates: map[string]bool{}, orphans: map[string]bool{}, baseline: map[string]usage{}, rollouts: map[string]int{}}
	g, err := setup(ctx, o, root)
	c.g = g
	defer func() {
		g.shutdown()
		if o.Out == "" && !o.Keep {
			_ = os.RemoveAll(root)
		}
	}()
	if err != nil {
		return false, fmt.Errorf("setting up the grid: %w (logs in %s)", err, g.logDir)
	}
	if g.fullDiskSkip != "" {
		say("skipped: full-disk (no tmpfs/loop mount here: %s)", g.fullDiskSkip)
	} else {
		say("full-disk: %s is a %s tmpfs", g.tmpfs, tmpfsSize)
	}
	if err := c.spawnInitial(ctx); err != nil {
		return false, err
	}
	say("%d agents, %d nodes up; soaking for %s", numAgents, numNodes, o.Duration)
	c.start = time.Now()
	if _, ob := c.waitConverged(ctx, initialConverge); !ob.converged() {
		return c.finish(ctx, fmt.Errorf("the fleet did not converge at start: %s", strings.Join(ob.problems, "; ")))
	}
	_ = sleep(ctx, 3*time.Second)
	c.noteUsage(c.usages())
	c.soak(ctx)
	return c.finish(ctx, nil)
}

func workDir(o options) (string, error) {
	if o.Out == "" {
		return os.MkdirTemp("", "sutra-chaos-")
	}
	dir, err := filepath.Abs(o.Out)
	if err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// spawnInitial asks for nodesPerAgent nodes on every agent.
func (c *chaos) spawnInitial(ctx context.Context) error {
	for _, a := range c.g.agents {
		for range nodesPerAgent {
			if err := c.spawn(ctx, a.id); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *chaos) spawn(ctx context.Context, agentID string) error {
	id := c.m.newID()
	if _, err := c.g.cli(ctx, "nodes", "spawn", "--agent", agentID, "--node-id", id); err != nil {
		return err
	}
	c.m.add(ctx, id, agentID)
	return nil
}

func (c *chaos) elapsed() time.Duration { return time.Since(c.start).Round(100 * time.Millisecond) }

// soak runs faults and operator actions until the duration is over.
func (c *chaos) soak(ctx context.Context) {
	end := c.start.Add(c.o.Duration)
	nextRollout := c.start.Add(rolloutEvery / 2)
	nextOp := c.start.Add(operatorEvery / 2)
	rollouts := 0
	for time.Now().Before(end) && ctx.Err() == nil {
		switch {
		case time.Now().After(nextRollout):
			rollouts++
			c.rollout(ctx, rollouts%2 == 1) // every other rollout has its master killed mid-wave
			nextRollout = time.Now().Add(rolloutEvery)
		case time.Now().After(nextOp):
			if c.rng.IntN(3) == 0 {
				c.setVersion(ctx)
			} else {
				c.replaceNode(ctx)
			}
			nextOp = time.Now().Add(operatorEvery)
		default:
			c.fault(ctx)
		}
		gap := time.Duration(2+c.rng.IntN(19)) * time.Second
		_ = sleep(ctx, min(gap, time.Until(end)))
	}
}

// record waits for convergence from t0 and records the event.
func (c *chaos) record(ctx context.Context, ev event, t0 time.Time, bound time.Duration) {
	d, ob := c.waitConvergedFrom(ctx, t0, bound)
	ev.converged = d
	if !ob.converged() {
		ev.failed = true
		c.failures = append(c.failures, fmt.Sprintf("at %s %s (%s): not converged within %s: %s", ev.at, ev.kind, ev.detail, bound, strings.Join(ob.problems, "; ")))
		for _, d := range ob.duplicates {
			c.duplicates[d] = true
		}
		for _, o := range ob.orphans {
			c.orphans[o] = true
		}
		say("%s: NOT converged within %s:\n    %s", ev.kind, bound, strings.Join(ob.problems, "\n    "))
	} else {
		say("%-28s %-60s converged in %.1f s", ev.kind, ev.detail, d.Seconds())
		c.sampleWrites(ctx)
		c.noteUsage(c.usages())
	}
	c.events = append(c.events, ev)
}

func (c *chaos) waitConverged(ctx context.Context, bound time.Duration) (time.Duration, observation) {
	return c.waitConvergedFrom(ctx, time.Now(), bound)
}

// waitConvergedFrom observes every 500 ms until the fleet has converged or
// bound has passed since t0.
func (c *chaos) waitConvergedFrom(ctx context.Context, t0 time.Time, bound time.Duration) (time.Duration, observation) {
	for {
		ob := c.observe(ctx)
		if ob.converged() || time.Since(t0) > bound || ctx.Err() != nil {
			return time.Since(t0), ob
		}
		_ = sleep(ctx, 500*time.Millisecond)
	}
}

// sampleWrites reads back some acknowledged writes of every node.
func (c *chaos) sampleWrites(ctx context.Context) {
	for _, n := range c.m.list() {
		c.noteLost(c.m.readBack(ctx, n, n.sample(c.rng, false)))
	}
}

func (c *chaos) noteLost(l []lostWrite) {
	seen := map[string]bool{}
	for _, x := range c.lost {
		seen[x.node+"/"+x.key] = true
	}
	for _, x := range l {
		if !seen[x.node+"/"+x.key] {
			c.lost = append(c.lost, x)
			say("LOST: %s", x)
		}
	}
}

// unexpectedExit records a process that died without a fault (a crash the
// soak found), with the end of its log, and starts it again.
func (c *chaos) unexpectedExit(p *proc) {
	c.failures = append(c.failures, fmt.Sprintf("%s exited by itself (%s) at +%s; last log lines:\n%s", p.name, p.exitStatus(), c.elapsed(), tail(p.logPath, 15)))
	say("%s exited by itself (%s); restarting it", p.name, p.exitStatus())
	if err := p.run(); err != nil {
		say("restart %s: %v", p.name, err)
	}
}

// tail is the last n lines of the file at path, indented.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    " + err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return "    " + strings.Join(lines, "\n    ")
}

// noteUsage keeps the first converged reading of each process incarnation
// as its baseline.
func (c *chaos) noteUsage(u map[string]usage) {
	for name, v := range u {
		if b, ok := c.baseline[name]; !ok || b.starts != v.starts {
			c.baseline[name] = v
		}
	}
}

// ---- faults ----

func (c *chaos) fault(ctx context.Context) {
	type choice struct {
		kind   string
		weight int
	}
	choices := []choice{{kKillMaster, 2}, {kKillAgent, 3}, {kKillNode, 3}, {kSigstop, 3}, {kCorruptCache, 2}}
	if c.g.tmpfs != "" {
		choices = append(choices, choice{kFullDisk, 2})
	}
	if c.o.HA {
		choices = append(choices, choice{kKillEtcdLeader, 2})
	}
	total := 0
	for _, ch := range choices {
		total += ch.weight
	}
	r := c.rng.IntN(total)
	kind := choices[0].kind
	for _, ch := range choices {
		if r < ch.weight {
			kind = ch.kind
			break
		}
		r -= ch.weight
	}
	ev := event{at: c.elapsed(), kind: kind, fault: true}
	var t0 time.Time
	var err error
	switch kind {
	case kKillMaster:
		m := c.g.masters[c.rng.IntN(len(c.g.masters))]
		ev.detail = m.name
		m.kill9()
		err = m.run()
		t0 = time.Now()
	case kKillAgent:
		a := c.g.agents[c.rng.IntN(len(c.g.agents))]
		down := time.Duration(c.rng.IntN(3000)) * time.Millisecond
		ev.detail = fmt.Sprintf("%s, restarted after %s", a.id, down)
		a.kill9()
		t0 = time.Now()
		_ = sleep(ctx, down)
		err = a.run()
	case kKillNode:
		p, ok := c.pickNodeProc("")
		if !ok {
			return
		}
		ev.detail = fmt.Sprintf("node %s pid %d", p.nodeID, p.pid)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		t0 = time.Now()
	case kSigstop:
		t0, ev.detail = c.sigstop(ctx)
	case kCorruptCache:
		t0, ev.detail, err = c.corruptCache(ctx, c.g.agents[c.rng.IntN(len(c.g.agents))], false)
	case kFullDisk:
		t0, ev.detail, err = c.fullDisk(ctx)
	case kKillEtcdLeader:
		t0, ev.detail, err = c.killEtcdLeader(ctx)
	}
	if err != nil {
		ev.detail += " (" + err.Error() + ")"
	}
	if t0.IsZero() {
		t0 = time.Now()
	}
	c.record(ctx, ev, t0, c.o.Bound)
}

// pickNodeProc is a random live process of a desired node (of agentID's
// nodes when given).
func (c *chaos) pickNodeProc(agentID string) (nodeProc, bool) {
	var ps []nodeProc
	for _, p := range scanNodes(c.g.root) {
		n := c.m.get(p.nodeID)
		if n != nil && (agentID == "" || n.agentID == agentID) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nodeProc{}, false
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].nodeID < ps[j].nodeID })
	return ps[c.rng.IntN(len(ps))], true
}

// sigstop stops a master, an agent or a node for 1-30 s.
func (c *chaos) sigstop(ctx context.Context) (time.Time, string) {
	d := time.Duration(1+c.rng.IntN(30)) * time.Second
	var pid int
	var what string
	switch c.rng.IntN(3) {
	case 0:
		m := c.g.masters[c.rng.IntN(len(c.g.masters))]
		pid, what = m.pid(), m.name
	case 1:
		a := c.g.agents[c.rng.IntN(len(c.g.agents))]
		pid, what = a.pid(), a.id
	default:
		p, ok := c.pickNodeProc("")
		if !ok {
			return time.Now(), "no node to stop"
		}
		pid, what = p.pid, "node "+p.nodeID
	}
	if pid == 0 {
		return time.Now(), what + " not running"
	}
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	_ = sleep(ctx, d)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	return time.Now(), fmt.Sprintf("%s pid %d for %s", what, pid, d)
}

// cachedBinaries are the storage-server files in a's cache.
func cachedBinaries(a *agent) []string {
	var out []string
	_ = filepath.WalkDir(a.cacheDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "storage-server" {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// corruptCache replaces a's cached binaries with garbage (renamed over
// them: the running nodes keep their files) and kills one of a's nodes, so
// that its restart meets the corrupt entry. With fill, a's cache disk is
// filled first (full-disk).
func (c *chaos) corruptCache(ctx context.Context, a *agent, fill bool) (time.Time, string, error) {
	p, ok := c.pickNodeProc(a.id)
	if !ok {
		return time.Now(), a.id + " has no node", nil
	}
	var done []string
	for _, f := range cachedBinaries(a) {
		tmp := f + ".chaos"
		if err := os.WriteFile(tmp, []byte("#!/bin/sh\necho corrupted by bench/chaos\nexit 7\n"), 0o755); err != nil {
			return time.Now(), a.id, err
		}
		if err := os.Rename(tmp, f); err != nil {
			return time.Now(), a.id, err
		}
		done = append(done, strings.TrimPrefix(f, a.cacheDir+"/"))
	}
	if fill {
		if err := fillDisk(filepath.Join(a.cacheDir, "chaos-filler")); err != nil {
			return time.Now(), a.id, err
		}
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	return time.Now(), fmt.Sprintf("%s: %s corrupted, node %s killed", a.id, strings.Join(done, ","), p.nodeID), nil
}

// fillDisk writes path until the filesystem is full.
func fillDisk(path string) error {
	f, err := os.Create(path)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return nil
		}
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}

// fullDisk corrupts the tmpfs agent's cache, fills its disk, kills one of
// its nodes (whose restart needs a new download that cannot be written),
// holds 5-15 s, then frees the space; convergence counts from then.
func (c *chaos) fullDisk(ctx context.Context) (time.Time, string, error) {
	a := c.g.agents[fullDiskAgent]
	_, detail, err := c.corruptCache(ctx, a, true)
	if err != nil {
		return time.Now(), detail, err
	}
	hold := time.Duration(5+c.rng.IntN(11)) * time.Second
	_ = sleep(ctx, hold)
	err = os.Remove(filepath.Join(a.cacheDir, "chaos-filler"))
	return time.Now(), fmt.Sprintf("%s, disk full for %s", detail, hold), err
}

// ---- operator traffic ----

// replaceNode stops a random node (its data leaves the promise) and spawns
// a new one on the agent with the fewest nodes.
func (c *chaos) replaceNode(ctx context.Context) {
	ns := c.m.list()
	if len(ns) == 0 {
		return
	}
	victim := ns[c.rng.IntN(len(ns))]
	ev := event{at: c.elapsed(), kind: opReplaceNode}
	c.m.remove(victim.id)
	if _, err := c.g.cli(ctx, "nodes", "stop", victim.id); err != nil {
		ev.detail = err.Error()
	}
	count := map[string]int{}
	for _, n := range c.m.list() {
		count[n.agentID]++
	}
	target := c.g.agents[0].id
	for _, a := range c.g.agents {
		if count[a.id] < count[target] {
			target = a.id
		}
	}
	if err := c.spawn(ctx, target); err != nil {
		ev.detail += " " + err.Error()
	}
	ev.detail = strings.TrimSpace(fmt.Sprintf("stop %s (%s), spawn on %s %s", victim.id, victim.agentID, target, ev.detail))
	c.record(ctx, ev, time.Now(), c.o.Bound)
}

// agentsDesired is each agent's desired storage-server version.
func (c *chaos) agentsDesired() map[string]string {
	var as []apiAgent
	out := map[string]string{}
	if err := c.g.api("/api/agents?limit=1000", &as); err == nil {
		for _, a := range as {
			out[a.ID] = wantVersion(a.Desired.StorageServerVersion)
		}
	}
	return out
}

func other(v string) string {
	if v == vOld {
		return vNew
	}
	return vOld
}

// setVersion moves one agent to the other version.
func (c *chaos) setVersion(ctx context.Context) {
	a := c.g.agents[c.rng.IntN(len(c.g.agents))]
	v := other(c.agentsDesired()[a.id])
	ev := event{at: c.elapsed(), kind: opSetVersion, detail: fmt.Sprintf("%s -> %s", a.id, v)}
	if _, err := c.g.cli(ctx, "agents", "set-version", a.id, "--storage-server", v); err != nil {
		ev.detail += " (" + err.Error() + ")"
	}
	c.record(ctx, ev, time.Now(), c.o.Bound)
}

// rollout rolls the fleet to the version most agents do not run; with
// killMaster a master is killed (and restarted) once an agent is upgrading.
func (c *chaos) rollout(ctx context.Context, killMaster bool) {
	votes := map[string]int{}
	for _, v := range c.agentsDesired() {
		votes[v]++
	}
	target := vNew
	if votes[vNew] > votes[vOld] {
		target = vOld
	}
	ev := event{at: c.elapsed(), kind: opRollout, detail: "to " + target}
	out, err := c.g.cli(ctx, "rollouts", "start", "--version", target, "--canary", "1", "--waves", "50,100",
		"--max-parallel", "2", "--soak", "2s", "--healthy-deadline", "60s", "--progress-deadline", "4m", "--on-failure", "rollback")
	if err != nil {
		ev.detail += " (" + err.Error() + ")"
		c.record(ctx, ev, time.Now(), c.o.Bound)
		return
	}
	lines := strings.Fields(strings.TrimSpace(out))
	id := lines[len(lines)-1]
	ev.detail += " id " + id
	var killed *master
	var killedAt time.Time
	state := "?"
	var last *gridv1.Rollout
	deadline := time.Now().Add(rolloutBound)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r := c.rolloutOf(ctx, id)
		if r != nil {
			last, state = r, r.GetState()
			if state == "completed" || state == "aborted" || state == "rolled_back" {
				break
			}
			if killMaster && killed == nil {
				for _, a := range r.GetAgents() {
					if s := a.GetState(); s == "upgrading" || s == "soaking" || s == "passed" {
						killed = c.g.masters[c.rng.IntN(len(c.g.masters))]
						killed.kill9()
						if err := killed.run(); err != nil {
							ev.detail += " (" + err.Error() + ")"
						}
						killedAt = time.Now()
						break
					}
				}
			}
		}
		_ = sleep(ctx, 300*time.Millisecond)
	}
	c.rollouts[state]++
	ev.detail += " ended " + state
	if state != "completed" {
		c.failures = append(c.failures, fmt.Sprintf("at %s rollout %s to %s ended %s, want completed: %s", ev.at, id, target, state, describeRollout(last)))
	}
	if killed != nil {
		ev.kind, ev.fault = kMasterMidWave, true
		ev.detail += fmt.Sprintf(", %s killed mid-wave", killed.name)
		c.record(ctx, ev, killedAt, time.Since(killedAt)+c.o.Bound)
		return
	}
	c.record(ctx, ev, time.Now(), c.o.Bound)
}

// describeRollout is a rollout's reason and its agents' states.
func describeRollout(r *gridv1.Rollout) string {
	if r == nil {
		return "never read"
	}
	parts := []string{fmt.Sprintf("reason %q", r.GetReason())}
	for _, a := range r.GetAgents() {
		parts = append(parts, fmt.Sprintf("%s wave %d %s %q", a.GetAgentId(), a.GetWave(), a.GetState(), a.GetReason()))
	}
	return strings.Join(parts, "; ")
}

func (c *chaos) rolloutOf(ctx context.Context, id string) *gridv1.Rollout {
	for _, m := range c.g.masters {
		if !m.alive() {
			continue
		}
		conn, err := c.g.conn(m)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := gridv1.NewRolloutServiceClient(conn).GetRollout(cctx, &gridv1.RolloutRequest{Id: id})
		cancel()
		if err == nil {
			return r
		}
	}
	return nil
}
