package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestBenchSmall runs the benchmark small (4 downloads of 1 MB under
// 4 MB/s, with the baseline) and checks its report.
func TestBenchSmall(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-n", "4", "-budget", "4MB/s", "-size", "1MB"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"unlimited (baseline)", "--max-egress 4MB/s", "aggregate", "fair share", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}
