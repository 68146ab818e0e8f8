// Command sutra-demo runs a whole Sutra Grid on one machine, on loopback, with
// embedded defaults — the README's `make demo`.
//
// It builds the binaries, stages storage-server 1.0.0 cross-compiled for every
// platform the grid supports under the design document's names, starts a
// master and two agents with their own cache and data directories, spawns
// storage nodes through the master, writes and reads a key through one of
// them, prints the fleet and commands to try, and on Ctrl-C stops everything
// (agents stop their nodes gracefully) leaving no process behind.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var opts demoOptions
	flag.StringVar(&opts.Dir, "dir", "demo", "working directory for the demo's binaries, data, caches and logs (wiped at start)")
	flag.StringVar(&opts.BinDir, "bin", "bin", "directory holding sutra-master, sutra-agent and sutra (built by `make build`)")
	flag.IntVar(&opts.GRPCPort, "grpc-port", 7000, "master gRPC port")
	flag.IntVar(&opts.HTTPPort, "http-port", 7001, "master HTTP port")
	flag.IntVar(&opts.Agents, "agents", 2, "number of agents")
	flag.IntVar(&opts.NodesPerAgent, "nodes", 1, "storage nodes to spawn per agent")
	flag.StringVar(&opts.Version, "version", "1.0.0", "storage-server version to stage")
	flag.BoolVar(&opts.Exit, "exit", false, "stop the grid once it is up instead of waiting for Ctrl-C (for CI smoke runs)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: sutra-demo [flags]\n\nRuns a master and agents on loopback; Ctrl-C stops everything.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, opts)
	if ctx.Err() != nil {
		// Ctrl-C (or SIGTERM) is how a demo ends, at any stage: everything it
		// started is stopped by now, so it is a clean exit, not a failure
		// (`make demo` then ends without "Error 1").
		fmt.Println("==> Stopped.")
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sutra-demo:", err)
		os.Exit(1)
	}
}
