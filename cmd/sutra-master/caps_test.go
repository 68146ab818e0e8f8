package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// Issue 9 items 6 and 8: the capacity caps are settings with their
// environment variables, listed in --help and validated together.
func TestCapSettings(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help = %v", err)
	}
	for _, want := range []string{"--max-agents", "env MAX_AGENTS, default 20000", "--max-nodes", "env MAX_NODES, default 100000",
		"--max-watchers", "env MAX_WATCHERS, default 64", "--grpc-max-streams", "env GRPC_MAX_STREAMS, default 64"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	err := run(context.Background(), []string{"--max-nodes", "-1", "--grpc-max-streams", "x"}, &out, &out,
		env(map[string]string{"MAX_AGENTS": "0", "MAX_WATCHERS": "many"}))
	for _, want := range []string{`MAX_AGENTS="0"`, `--max-nodes="-1"`, `MAX_WATCHERS="many"`, `--grpc-max-streams="x"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run = %v, want it to name %s", err, want)
		}
	}
}
