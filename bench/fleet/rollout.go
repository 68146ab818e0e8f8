package main

// -rollout (issue 14): once the fleet is steady, publish a new
// storage-server version in the child master's binaries dir, start a
// rollout of it over every agent (waves 1,10,50,100 %, no canary,
// max-parallel the whole fleet so it is not the bottleneck, a short soak),
// let the simulated agents "upgrade" (agent.observe/agent.upgrade in
// main.go), and poll GetRollout until it completes. It reports the
// completion time beside the theoretical minimum, and the master's CPU,
// peak RSS and the heartbeat latency during the rollout.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/opauth"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Rollout parameters of the bench.
const (
	rolloutVersion = "1.1.0"
	// The simulated agents report linux/x86_64 (agent.register).
	rolloutPlatform = "linux"
	rolloutArch     = "x86_64"
	// The master's rollout controller steps every second (and on fleet
	// changes): master/rollout Options.Interval.
	controllerTick = time.Second
)

var rolloutWaves = []uint32{1, 10, 50, 100}

// rolloutResult is what -rollout measured.
type rolloutResult struct {
	state      string
	reason     string
	waves      int
	took       time.Duration // master's started → finished
	wall       time.Duration // StartRollout call → completion seen
	minimum    time.Duration // waves × soak
	bound      time.Duration // waves × (interval×1.05 + delay + soak + 2 ticks)
	upgraded   int
	heartbeats int
	errors     int
	p50, p99   time.Duration
	max        time.Duration
	cpu, rss   float64
}

// publish writes a small storage-server binary of version v for the
// simulated agents' platform into the child's binaries dir, its mtime in
// the past so the catalog need not wait for it to settle.
func publish(dataDir, v string) error {
	name := fmt.Sprintf("storage-server-%s-%s-%s", v, rolloutPlatform, rolloutArch)
	p := filepath.Join(dataDir+"-binaries", name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho bench storage-server "+v+"\n"), 0o755); err != nil {
		return err
	}
	old := time.Now().Add(-time.Minute)
	return os.Chtimes(p, old, old)
}

// resetPeakRSS resets the child's VmHWM (Linux: clear_refs 5), so the
// peak read afterwards is the rollout's; best effort.
func (c *child) resetPeakRSS() {
	_ = os.WriteFile("/proc/"+strconv.Itoa(c.cmd.Process.Pid)+"/clear_refs", []byte("5"), 0)
}

func runRollout(ctx context.Context, c config, ch *child, addr, dataDir string, agents []*agent, s *stats) (*rolloutResult, error) {
	out := c.out
	creds, err := opauth.Load(dataDir)
	if err != nil {
		return nil, fmt.Errorf("operator credentials: %w", err)
	}
	opts, err := creds.DialOptions()
	if err != nil {
		return nil, err
	}
	// GetRollout lists every agent: 10,000 of them are more than gRPC's
	// default 4 MB.
	conn, err := grpc.NewClient(addr, append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rc := gridv1.NewRolloutServiceClient(conn)
	if err := publish(dataDir, rolloutVersion); err != nil {
		return nil, fmt.Errorf("publish %s: %w", rolloutVersion, err)
	}
	healthy := 2*c.interval + c.soak + time.Minute
	req := &gridv1.StartRolloutRequest{
		Artifact: "storage-server", Version: rolloutVersion, Waves: rolloutWaves,
		MaxParallel: uint32(min(len(agents), 10000)), SoakMs: uint64(c.soak.Milliseconds()), // max-parallel ≤ master/rollout MaxAgents
		HealthyDeadlineMs: uint64(healthy.Milliseconds()), ProgressDeadlineMs: uint64((healthy + 10*time.Minute).Milliseconds()),
	}

	// Measure from here: heartbeats, the master's CPU and peak RSS.
	s.mu.Lock()
	s.lat, s.errs, s.recording = s.lat[:0], map[codes.Code]int{}, true
	s.mu.Unlock()
	ch.resetPeakRSS()
	cpu0, _ := ch.cpu()
	t0 := time.Now()

	// The catalog registers the new file within its debounce: retry while
	// it says the version is not published yet.
	var ro *gridv1.Rollout
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ro, err = rc.StartRollout(rctx, req)
		cancel()
		if status.Code(err) != codes.InvalidArgument || time.Since(t0) > 15*time.Second {
			break
		}
		sleep(ctx, 100*time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	res := &rolloutResult{waves: int(ro.GetWaves())}
	if ro.GetCanary() > 0 {
		res.waves++
	}
	res.minimum = time.Duration(res.waves) * c.soak
	res.bound = time.Duration(res.waves) * (c.interval + c.interval/20 + c.upgradeDelay + c.soak + 2*controllerTick)
	fmt.Fprintf(out, "rollout %s of storage-server %s: %d agents, waves %v, max-parallel %d, soak %s (started %s after publishing)\n",
		ro.GetId(), rolloutVersion, len(ro.GetAgents()), rolloutWaves, req.MaxParallel, c.soak, time.Since(t0).Round(time.Millisecond))

	deadline := time.Now().Add(time.Duration(res.waves)*healthy + time.Minute)
	lastWave := uint32(1<<32 - 1)
	for {
		// Each GetRollout lists every agent: poll once a second (its cost is
		// in the master's CPU); the completion time is the master's own.
		sleep(ctx, time.Second)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		got, err := rc.GetRollout(rctx, &gridv1.RolloutRequest{Id: ro.GetId()})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("get: %w", err)
		}
		if got.GetWave() != lastWave || got.GetState() != "running" {
			lastWave = got.GetWave()
			counts := map[string]int{}
			for _, a := range got.GetAgents() {
				counts[a.GetState()]++
			}
			fmt.Fprintf(out, "  %6.1fs  %s, wave %d/%d: %d passed, %d upgrading, %d soaking, %d pending, %d failed\n",
				time.Since(t0).Seconds(), got.GetState(), got.GetWave(), got.GetWaves(), counts["passed"], counts["upgrading"], counts["soaking"], counts["pending"], counts["failed"])
		}
		if st := got.GetState(); st != "running" && st != "pending" {
			res.state, res.reason = st, got.GetReason()
			res.wall = time.Since(t0)
			if f, s0 := got.GetFinishedUnixMs(), got.GetStartedUnixMs(); f > 0 && s0 > 0 {
				res.took = time.Duration(f-s0) * time.Millisecond
			}
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rollout %s still %s (wave %d/%d) after %s", ro.GetId(), got.GetState(), got.GetWave(), got.GetWaves(), time.Since(t0).Round(time.Second))
		}
	}
	wall := time.Since(t0)
	cpu1, cerr := ch.cpu()
	s.mu.Lock()
	s.recording = false
	lat := slices.Clone(s.lat)
	for _, n := range s.errs {
		res.errors += n
	}
	s.mu.Unlock()
	slices.Sort(lat)
	if len(lat) > 0 {
		pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		res.heartbeats, res.p50, res.p99, res.max = len(lat), pct(0.5), pct(0.99), pct(1)
	}
	if cerr == nil {
		res.cpu = 100 * float64(cpu1-cpu0) / float64(wall)
	}
	res.rss, _ = ch.peakRSS()
	for _, a := range agents {
		res.upgraded += int(a.upgraded.Load())
	}
	if res.state != "completed" {
		return res, fmt.Errorf("rollout %s halted: %s (%s)", ro.GetId(), res.state, res.reason)
	}
	if res.upgraded != len(agents) {
		return res, fmt.Errorf("rollout completed but %d of %d agents upgraded", res.upgraded, len(agents))
	}
	return res, nil
}

// printRollout prints the rollout's figures beside the steady state's.
func printRollout(c config, r *result) {
	ro, out := r.ro, c.out
	if ro == nil {
		return
	}
	fmt.Fprintf(out, "\nrollout of %d agents (%d nodes each), heartbeat every %s, %d waves, soak %s, upgrade delay %s\n",
		c.n, c.nodes, c.interval, ro.waves, c.soak, c.upgradeDelay)
	fmt.Fprintf(out, "%-40s %14s %14s\n", "", "steady", "rollout")
	row := func(name, steady, during string) { fmt.Fprintf(out, "%-40s %14s %14s\n", name, steady, during) }
	ms := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	row("rollout state", "", ro.state)
	row("completion (master: started → finished)", "", ro.took.Round(time.Millisecond).String())
	row("completion (bench: StartRollout → seen)", "", ro.wall.Round(time.Millisecond).String())
	row("theoretical minimum (waves × soak)", "", ro.minimum.String())
	row("+ heartbeat effects (upper bound)", "", ro.bound.String())
	row("agents upgraded", "", strconv.Itoa(ro.upgraded))
	row("heartbeats", strconv.Itoa(r.heartbeats), strconv.Itoa(ro.heartbeats))
	row("heartbeat errors", strconv.Itoa(r.errors), strconv.Itoa(ro.errors))
	row("heartbeat p50", ms(r.p50), ms(ro.p50))
	row("heartbeat p99 (goal < 25ms)", ms(r.p99), ms(ro.p99))
	row("heartbeat max", ms(r.max), ms(ro.max))
	row("master CPU (% of one core)", fmt.Sprintf("%.1f%%", r.cpu), fmt.Sprintf("%.1f%%", ro.cpu))
	row("master peak RSS", fmt.Sprintf("%.1f MiB", r.rss), fmt.Sprintf("%.1f MiB", ro.rss))
	fmt.Fprintf(out, "bound per wave: the slowest agent sees the new version on its next heartbeat (≤ %s + 5%% jitter), reports it %s later, soaks %s; the controller passes it on its next step (≤ %s after the soak) and may take up to %s more to start soaking it\n",
		c.interval, c.upgradeDelay, c.soak, controllerTick, controllerTick)
}
