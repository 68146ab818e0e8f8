//go:build linux

package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// finish runs the final checks, prints the table and the last line, and
// reports whether the run passed.
func (c *chaos) finish(ctx context.Context, setupErr error) (bool, error) {
	if setupErr == nil {
		say("soak over: final convergence and full read-back")
		d, ob := c.waitConverged(context.WithoutCancel(ctx), c.o.Bound)
		if !ob.converged() {
			c.failures = append(c.failures, fmt.Sprintf("at the end: not converged within %s: %s", c.o.Bound, strings.Join(ob.problems, "; ")))
			for _, x := range ob.duplicates {
				c.duplicates[x] = true
			}
			for _, x := range ob.orphans {
				c.orphans[x] = true
			}
		} else {
			say("final convergence in %.1f s", d.Seconds())
		}
		total := 0
		for _, n := range c.m.list() {
			keys := n.sample(nil, true)
			total += len(keys)
			c.noteLost(c.m.readBack(context.WithoutCancel(ctx), n, keys))
		}
		say("read back %d acknowledged writes of the %d desired nodes", total, len(c.m.list()))
		_ = sleep(ctx, 5*time.Second)
		c.checkLeaks(c.usages())
	} else {
		c.failures = append(c.failures, setupErr.Error())
	}
	ok := c.report(os.Stdout)
	return ok, nil
}

// checkLeaks compares each process's goroutines and fds with its baseline
// (same incarnation only).
func (c *chaos) checkLeaks(end map[string]usage) {
	names := make([]string, 0, len(end))
	for n := range end {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		e, b := end[name], c.baseline[name]
		if b.starts != e.starts || b.goroutines == 0 {
			say("leak check %s: restarted since its baseline; now %.0f goroutines, %.0f fds", name, e.goroutines, e.fds)
			continue
		}
		leak := e.goroutines > b.goroutines*leakSlackRatio+leakSlackAbsolute || e.fds > b.fds*leakSlackRatio+leakSlackAbsolute
		mark := "ok"
		if leak {
			mark = "LEAK"
			c.failures = append(c.failures, fmt.Sprintf("leak: %s goroutines %.0f -> %.0f, fds %.0f -> %.0f", name, b.goroutines, e.goroutines, b.fds, e.fds))
		}
		say("leak check %s: goroutines %.0f -> %.0f, open fds %.0f -> %.0f: %s", name, b.goroutines, e.goroutines, b.fds, e.fds, mark)
	}
}

// percentile is the p-th percentile (nearest rank) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// summary is one row of the table.
type summary struct {
	kind          string
	count, failed int
	p50, p99, max time.Duration
}

func summarize(events []event) (rows []summary, faults int, all []time.Duration) {
	by := map[string][]time.Duration{}
	failed := map[string]int{}
	for _, e := range events {
		by[e.kind] = append(by[e.kind], e.converged)
		if e.failed {
			failed[e.kind]++
		}
		if e.fault {
			faults++
			all = append(all, e.converged)
		}
	}
	kinds := make([]string, 0, len(by))
	for k := range by {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		ds := by[k]
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		rows = append(rows, summary{kind: k, count: len(ds), failed: failed[k], p50: percentile(ds, 50), p99: percentile(ds, 99), max: ds[len(ds)-1]})
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return rows, faults, all
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }

// report prints the table, what failed and the last line; it reports
// whether the run passed.
func (c *chaos) report(w *os.File) bool {
	rows, faults, all := summarize(c.events)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tCOUNT\tNOT CONVERGED\tCONVERGED p50 s\tp99 s\tmax s")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", r.kind, r.count, r.failed, secs(r.p50), secs(r.p99), secs(r.max))
	}
	_ = tw.Flush()
	if len(c.rollouts) > 0 {
		var parts []string
		for s, n := range c.rollouts {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "rollouts: %s\n", strings.Join(parts, ", "))
	}
	if c.g != nil && c.g.fullDiskSkip != "" {
		fmt.Fprintln(w, "skipped: full-disk (no tmpfs/loop mount here)")
	}
	fmt.Fprintf(w, "writes not acknowledged (errors, timeouts under faults): %d\n", c.m.failed.Load())
	ok := len(c.lost) == 0 && len(c.duplicates) == 0 && len(c.orphans) == 0 && len(c.failures) == 0
	if !ok {
		fmt.Fprintln(w, "\nFAILED")
		for _, l := range c.lost[:min(len(c.lost), 50)] {
			fmt.Fprintf(w, "  lost: %s\n", l)
		}
		if len(c.lost) > 50 {
			fmt.Fprintf(w, "  ... and %d more lost writes\n", len(c.lost)-50)
		}
		for _, d := range sortedKeys(c.duplicates) {
			fmt.Fprintf(w, "  duplicate: %s\n", d)
		}
		for _, o := range sortedKeys(c.orphans) {
			fmt.Fprintf(w, "  orphan: %s\n", o)
		}
		for _, f := range c.failures {
			fmt.Fprintf(w, "  %s\n", f)
		}
		fmt.Fprintf(w, "fault sequence (seed %d):\n", c.o.Seed)
		for _, e := range c.events {
			st := "converged in " + secs(e.converged) + " s"
			if e.failed {
				st = "NOT converged"
			}
			fmt.Fprintf(w, "  +%-9s %-28s %s: %s\n", e.at, e.kind, e.detail, st)
		}
		if c.g != nil {
			fmt.Fprintf(w, "logs: %s\n", c.g.logDir)
		}
	}
	fmt.Fprintf(w, "chaos: %d faults, %d writes, %d lost, %d duplicates, %d orphans, converged p99 %s s\n",
		faults, c.m.writes.Load(), len(c.lost), len(c.duplicates), len(c.orphans), secs(percentile(all, 99)))
	return ok
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
