package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestRateLimitSettings(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help = %v", err)
	}
	for _, want := range []string{
		"--rate-limit-identity RATE", "env SUTRA_RATE_LIMIT_IDENTITY, default 20/s:40",
		"--rate-limit-address RATE", "env SUTRA_RATE_LIMIT_ADDRESS, default 5000/s:20000",
		"--rate-limit-enroll RATE", "env SUTRA_RATE_LIMIT_ENROLL, default 10/m:20",
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--rate-limit-identity", "20"}, nil, `--rate-limit-identity: rate "20": no /UNIT`},
		{nil, map[string]string{"SUTRA_RATE_LIMIT_ADDRESS": "0/s"}, `SUTRA_RATE_LIMIT_ADDRESS: rate "0/s"`},
		{[]string{"--rate-limit-enroll", "10/d:20"}, map[string]string{"SUTRA_RATE_LIMIT_ENROLL": "off"}, `--rate-limit-enroll: rate "10/d:20": UNIT must be s, m or h`},
	} {
		// A bad port keeps run from starting a master whatever the rates.
		err := run(context.Background(), append(c.args, "--http-port", "x"), &out, &out, env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%v, %v) = %v, want it to contain %q", c.args, c.env, err, c.want)
		}
	}
	for _, ok := range []string{"off", "OFF", "1/h", "0.5/s:1", "100000/s:1000000"} {
		err := run(context.Background(), []string{"--http-port", "x", "--rate-limit-identity", ok, "--rate-limit-enroll", ok}, &out, &out,
			env(map[string]string{"SUTRA_RATE_LIMIT_ADDRESS": ok}))
		if err == nil || strings.Contains(err.Error(), "rate") {
			t.Errorf("rate %q: run = %v, want only the port error", ok, err)
		}
	}
}
