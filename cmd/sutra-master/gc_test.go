package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestAgentGCThresholdSetting(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help = %v", err)
	}
	if !strings.Contains(errb.String(), "--agent-gc-threshold DURATION") || !strings.Contains(errb.String(), "env AGENT_GC_THRESHOLD, default 24h") {
		t.Fatalf("--help lacks the agent GC threshold:\n%s", errb.String())
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"AGENT_GC_THRESHOLD": "10s"}, `AGENT_GC_THRESHOLD="10s": want 0 (never remove offline agents) or a duration longer than 30s`},
		{nil, map[string]string{"AGENT_GC_THRESHOLD": "-24h"}, `AGENT_GC_THRESHOLD="-24h"`},
		{[]string{"--agent-gc-threshold", "a day"}, nil, `--agent-gc-threshold="a day"`},
		{[]string{"--agent-gc-threshold", "1d"}, map[string]string{"AGENT_GC_THRESHOLD": "0"}, `--agent-gc-threshold="1d"`},
	} {
		// A bad port keeps run from starting a master whatever the GC value.
		err := run(context.Background(), append(c.args, "--http-port", "x"), &out, &out, env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%v, %v) = %v, want it to contain %q", c.args, c.env, err, c.want)
		}
	}
	for _, ok := range []string{"0", "24h", "90m", "31s"} {
		err := run(context.Background(), []string{"--http-port", "x"}, &out, &out, env(map[string]string{"AGENT_GC_THRESHOLD": ok}))
		if err == nil || strings.Contains(err.Error(), "AGENT_GC_THRESHOLD") {
			t.Errorf("AGENT_GC_THRESHOLD=%s: run = %v, want only the port error", ok, err)
		}
	}
}
