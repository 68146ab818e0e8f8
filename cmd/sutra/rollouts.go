package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// rolloutCall is call for the RolloutService, on the same connection.
func (c *cli) rolloutCall(ctx context.Context, fn func(ctx context.Context, r gridv1.RolloutServiceClient) error) error {
	if _, err := c.client(); err != nil {
		return err
	}
	if c.conn == nil {
		return usageErr("no connection to the master")
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	return c.rpcErr(fn(ctx, gridv1.NewRolloutServiceClient(c.conn)))
}

// rollouts dispatches 'sutra rollouts [ID] | start | pause|resume|abort|rollback|retry ID'.
func (c *cli) rollouts(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "start":
			return c.startRollout(ctx, args[1:])
		case "pause", "resume", "abort", "rollback", "retry":
			return c.rolloutAction(ctx, args[0], args[1:])
		}
	}
	fs := c.flagSet("rollouts")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageErr("rollouts takes at most one rollout id")
	}
	if len(pos) == 1 {
		var r *gridv1.Rollout
		if err := c.rolloutCall(ctx, func(ctx context.Context, s gridv1.RolloutServiceClient) (err error) {
			r, err = s.GetRollout(ctx, &gridv1.RolloutRequest{Id: pos[0]})
			return err
		}); err != nil {
			return err
		}
		return c.printRollout(r)
	}
	var list *gridv1.ListRolloutsResponse
	if err := c.rolloutCall(ctx, func(ctx context.Context, s gridv1.RolloutServiceClient) (err error) {
		list, err = s.ListRollouts(ctx, &gridv1.ListRolloutsRequest{})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSONList(c.stdout, true, list.GetRollouts()...)
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "ID\tARTIFACT\tVERSION\tSTATE\tWAVE\tPASSED\tFAILED\tSKIPPED\tAGENTS\tBY")
	for _, r := range list.GetRollouts() {
		n := counts(r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.GetId(), r.GetArtifact(), orDash(r.GetVersion()), rolloutState(r),
			waveName(r.GetWave(), r.GetWaves()), n["passed"], n["failed"], n["skipped"], len(r.GetAgents()), orDash(r.GetCreatedBy()))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rolloutState(r *gridv1.Rollout) string {
	if r.GetRollingBack() && r.GetState() == "running" {
		return "rolling_back"
	}
	return r.GetState()
}

func counts(r *gridv1.Rollout) map[string]int {
	n := map[string]int{}
	for _, a := range r.GetAgents() {
		n[a.GetState()]++
	}
	return n
}

func waveName(w, of uint32) string {
	if w == 0 {
		return "canary"
	}
	return fmt.Sprintf("%d/%d", w, of)
}

func memberWave(w int32) string {
	switch {
	case w < 0:
		return "-"
	case w == 0:
		return "canary"
	}
	return strconv.Itoa(int(w))
}

// printRollout prints one rollout: a summary and a table of its agents.
func (c *cli) printRollout(r *gridv1.Rollout) error {
	if c.g.output == "json" {
		return writeJSON(c.stdout, r)
	}
	ms := func(v uint64) time.Duration { return time.Duration(v) * time.Millisecond }
	w := c.stdout
	fmt.Fprintf(w, "rollout %s: %s %s, %s", r.GetId(), r.GetArtifact(), orDash(r.GetVersion()), rolloutState(r))
	if r.GetDryRun() {
		fmt.Fprint(w, " (dry run: not started)")
	}
	fmt.Fprintln(w)
	if r.GetReason() != "" {
		fmt.Fprintf(w, "  reason: %s\n", r.GetReason())
	}
	fmt.Fprintf(w, "  canary %d, waves %v, max-parallel %d, rollback-parallel %d, soak %s, healthy-deadline %s, progress-deadline %s, on-failure %s\n",
		r.GetCanary(), r.GetWavePercents(), r.GetMaxParallel(), r.GetRollbackParallel(), ms(r.GetSoakMs()), ms(r.GetHealthyDeadlineMs()), ms(r.GetProgressDeadlineMs()), r.GetOnFailure())
	tw := table(w)
	fmt.Fprintln(tw, "AGENT\tWAVE\tSTATE\tFROM\tREASON")
	for _, a := range r.GetAgents() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.GetAgentId(), memberWave(a.GetWave()), a.GetState(), orDash(a.GetPreviousVersion()), orDash(a.GetReason()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, a := range r.GetAgents() {
		if len(a.GetLastLogLines()) > 0 {
			fmt.Fprintf(w, "last log lines of %s:\n", a.GetAgentId())
			for _, l := range a.GetLastLogLines() {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
	}
	return nil
}

// parseWaves parses "10,50,100".
func parseWaves(s string) ([]uint32, error) {
	if s == "" {
		return nil, nil
	}
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil || n == 0 || n > 100 {
			return nil, usageErr("--waves %q: cumulative percentages 1..100 like 10,50,100", s)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// parseSelector parses "k=v,k2=v2".
func parseSelector(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr("--selector %q: labels like key=value,key2=value2", s)
		}
		out[k] = v
	}
	return out, nil
}

// startRollout is 'sutra rollouts start --artifact A --version V ...'.
func (c *cli) startRollout(ctx context.Context, args []string) error {
	fs := c.flagSet("rollouts start")
	art := fs.String("artifact", "storage-server", "what to roll out: storage-server or sutra-agent")
	ver := fs.String("version", "", "the exact version to roll out (x.y.z; required)")
	agents := fs.String("agents", "", "comma-separated agent ids (default: every agent, or --selector)")
	selector := fs.String("selector", "", "agent labels key=value,… every target agent has")
	canary := fs.Uint("canary", 0, "agents upgraded first, alone")
	waves := fs.String("waves", "100", "cumulative percentages of the rest, e.g. 10,50,100")
	par := fs.Uint("max-parallel", 1, "agents upgrading at once at most")
	rpar := fs.Uint("rollback-parallel", 0, "agents rolled back at once (default: max-parallel)")
	soak := fs.Duration("soak", 60*time.Second, "how long an upgraded agent must stay healthy")
	hd := fs.Duration("healthy-deadline", 5*time.Minute, "an agent not healthy on the new version by then fails")
	pd := fs.Duration("progress-deadline", 30*time.Minute, "the rollout halts when no agent passes for this long")
	maxf := fs.Uint("max-failures", 0, "halt when more agents than this fail")
	ratio := fs.Float64("max-failure-ratio", 0, "halt when more than this fraction (0..1) of agents fail (instead of --max-failures)")
	onf := fs.String("on-failure", "pause", "what a halt does: pause or rollback")
	dry := fs.Bool("dry-run", false, "print the plan (membership, waves, skipped agents) without starting")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageErr("rollouts start takes flags only (got %q)", pos[0])
	}
	if *ver == "" {
		return usageErr("rollouts start: --version is required (an exact version like 1.2.3)")
	}
	for _, d := range []time.Duration{*soak, *hd, *pd} {
		if d < 0 {
			return usageErr("rollouts start: durations must not be negative")
		}
	}
	req := &gridv1.StartRolloutRequest{Artifact: *art, Version: *ver, Canary: uint32(min(*canary, 1<<31)), MaxParallel: uint32(min(*par, 1<<31)),
		RollbackParallel: uint32(min(*rpar, 1<<31)), SoakMs: uint64(soak.Milliseconds()), HealthyDeadlineMs: uint64(hd.Milliseconds()),
		ProgressDeadlineMs: uint64(pd.Milliseconds()), MaxFailures: uint32(min(*maxf, 1<<31)), MaxFailureRatio: *ratio, OnFailure: *onf, DryRun: *dry}
	if *agents != "" {
		req.Agents = strings.Split(*agents, ",")
	}
	if req.Selector, err = parseSelector(*selector); err != nil {
		return err
	}
	if req.Waves, err = parseWaves(*waves); err != nil {
		return err
	}
	var r *gridv1.Rollout
	if err := c.rolloutCall(ctx, func(ctx context.Context, s gridv1.RolloutServiceClient) (err error) {
		r, err = s.StartRollout(ctx, req)
		return err
	}); err != nil {
		return err
	}
	if *dry || c.g.output == "json" {
		return c.printRollout(r)
	}
	_, err = fmt.Fprintln(c.stdout, r.GetId())
	return err
}

// rolloutAction is 'sutra rollouts pause|resume|abort|rollback|retry ID'.
func (c *cli) rolloutAction(ctx context.Context, action string, args []string) error {
	fs := c.flagSet("rollouts " + action)
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("rollouts %s takes exactly one rollout id", action)
	}
	req := &gridv1.RolloutRequest{Id: pos[0]}
	var r *gridv1.Rollout
	if err := c.rolloutCall(ctx, func(ctx context.Context, s gridv1.RolloutServiceClient) (err error) {
		switch action {
		case "pause":
			r, err = s.PauseRollout(ctx, req)
		case "resume":
			r, err = s.ResumeRollout(ctx, req)
		case "abort":
			r, err = s.AbortRollout(ctx, req)
		case "rollback":
			r, err = s.RollbackRollout(ctx, req)
		default:
			r, err = s.RetryRollout(ctx, req)
		}
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, r)
	}
	_, err = fmt.Fprintf(c.stdout, "rollout %s: %s\n", r.GetId(), rolloutState(r))
	return err
}
