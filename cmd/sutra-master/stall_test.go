package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestDownloadStallTimeoutSetting(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help = %v", err)
	}
	if want := "env DOWNLOAD_STALL_TIMEOUT, default 30s"; !strings.Contains(errb.String(), want) {
		t.Errorf("--help lacks %q", want)
	}
	for _, bad := range []string{"forever", "0s", "-1s"} {
		err := run(context.Background(), nil, &out, &out, env(map[string]string{"DOWNLOAD_STALL_TIMEOUT": bad}))
		if want := `DOWNLOAD_STALL_TIMEOUT="` + bad + `"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DOWNLOAD_STALL_TIMEOUT=%s: run = %v, want it to name %s", bad, err, want)
		}
	}
}
