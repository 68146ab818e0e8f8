// Command sutra is the operator CLI of a Sutra Grid: it shows the fleet
// (status, agents, nodes, binaries, events) and changes its desired state
// (nodes spawn, nodes stop, agents set-version) through the master's gRPC
// control plane.
// Run `sutra help` for commands, flags and exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
