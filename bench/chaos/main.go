//go:build linux

// Command chaos is the grid's chaos soak (issue 17): it builds the real
// binaries from the tree, starts a master (with -ha three masters on a
// three-member etcd), five agents enrolled with a join token and ten
// storage nodes, keeps clients writing and reading keys on every node and
// an operator spawning, stopping, setting versions and rolling releases
// out, and meanwhile injects seeded faults: kill -9 of the master, of an
// agent, of a node; SIGSTOP/SIGCONT of any of them for up to 30 s; a
// corrupted cached binary; a full agent cache disk; a master restart
// during a rollout wave; with -ha the etcd leader killed.
//
// After every fault it waits until the fleet has converged (every desired
// node running once, owned by a live agent, on its agent's desired version,
// as /api/nodes says) and samples the acknowledged writes; at the end it
// reads back every acknowledged write and compares the master's and the
// agents' goroutines and open fds with their start. It prints a table per
// fault kind and last the line
//
//	chaos: F faults, W writes, 0 lost, 0 duplicates, 0 orphans, converged p99 X s
//
// and exits 1 when anything was lost, duplicated, orphaned, leaked or did
// not converge within the bound, after printing what and the fault sequence
// that led there. It runs on Linux only (it reads /proc and sends signals).
//
// Usage: go run ./bench/chaos [-duration 30m] [-seed N] [-ha] [-out DIR] [-keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	Duration time.Duration // soak time, after the fleet is up
	Seed     int64         // fault and load schedule; 0 picks one
	HA       bool          // three masters on a three-member etcd
	Out      string        // keep every log here ("" = a temp dir)
	Keep     bool          // keep the working directory
	Bound    time.Duration // convergence bound after a fault
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.DurationVar(&o.Duration, "duration", 30*time.Minute, "how long to inject faults, once the fleet is up")
	fs.Int64Var(&o.Seed, "seed", 0, "seed of the fault, operator and load schedule (0: a random one, printed first)")
	fs.BoolVar(&o.HA, "ha", false, "three masters (--store etcd) on three etcd member processes; adds etcd-leader and any-master kills")
	fs.StringVar(&o.Out, "out", "", "directory for the working tree and every process log (kept; default a temp dir removed at the end unless -keep)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the working directory (temp dir) at the end")
	fs.DurationVar(&o.Bound, "bound", 60*time.Second, "convergence bound: a fault after which the fleet has not converged within this counts as a convergence failure")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: go run ./bench/chaos [-duration 30m] [-seed N] [-ha] [-out DIR] [-keep] [-bound 60s]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Duration <= 0 || o.Duration > 24*time.Hour {
		return o, fmt.Errorf("-duration %s: give 1s to 24h", o.Duration)
	}
	if o.Bound < 5*time.Second || o.Bound > time.Hour {
		return o, fmt.Errorf("-bound %s: give 5s to 1h", o.Bound)
	}
	return o, nil
}
