//go:build linux

package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseEnviron(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"A=1\x00B=2\x00", map[string]string{"A": "1", "B": "2"}},
		{"A=1\x00A=2", map[string]string{"A": "1"}},              // first wins, as getenv
		{"=x\x00noequals\x00C==d", map[string]string{"C": "=d"}}, // empty key and no '=' ignored
		{"SUTRA_NODE_ID=n1\x00\x00\x00", map[string]string{"SUTRA_NODE_ID": "n1"}},
	}
	for _, tt := range tests {
		if got := parseEnviron([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseEnviron(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestProcState(t *testing.T) {
	tests := []struct {
		in   string
		want byte
		ok   bool
	}{
		{"123 (storage-server) S 1 2 3", 'S', true},
		{"123 (a) b) Z 1", 'Z', true}, // a command name holding ") "
		{"123 (x) T", 'T', true},
		{"123 (x)", 0, false},
		{"garbage", 0, false},
		{"1 (x)S", 0, false},
	}
	for _, tt := range tests {
		got, ok := procState([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("procState(%q) = %q, %v, want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// The soak's own process is found alive; a pid that cannot exist is not.
func TestProcAlive(t *testing.T) {
	if !procAlive(os.Getpid()) {
		t.Error("procAlive(self) = false")
	}
	if procAlive(1 << 30) {
		t.Error("procAlive(1<<30) = true")
	}
}

func TestMetricValue(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines_total_bogus 5
go_goroutines 41
process_open_fds 2.6e+01
go_gc_duration_seconds{quantile="0"} 1e-05
`
	for _, tt := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"go_goroutines", 41, true},
		{"process_open_fds", 26, true},
		{"go_gc_duration_seconds", 0, false}, // labelled: not an unlabelled sample
		{"missing", 0, false},
	} {
		got, ok := metricValue([]byte(text), tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("metricValue(%s) = %v, %v, want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := metricValue([]byte("go_goroutines NaNx\n"), "go_goroutines"); ok {
		t.Error("a malformed value was accepted")
	}
}

func TestPercentile(t *testing.T) {
	s := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Second)
		}
		return out
	}
	for _, tt := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 99, 0},
		{s(7), 50, 7 * time.Second},
		{s(1, 2, 3, 4), 50, 2 * time.Second},
		{s(1, 2, 3, 4), 99, 4 * time.Second},
		{s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Second},
	} {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
		}
	}
}

// Faults count toward F and the p99; operator actions get rows but do not.
func TestSummarize(t *testing.T) {
	evs := []event{
		{kind: kKillNode, fault: true, converged: 2 * time.Second},
		{kind: kKillNode, fault: true, converged: 4 * time.Second, failed: true},
		{kind: opRollout, converged: 30 * time.Second},
		{kind: kKillMaster, fault: true, converged: 3 * time.Second},
	}
	rows, faults, all := summarize(evs)
	if faults != 3 || len(all) != 3 || all[2] != 4*time.Second {
		t.Fatalf("faults %d, all %v; want 3 faults, max 4s", faults, all)
	}
	var kinds []string
	for _, r := range rows {
		kinds = append(kinds, r.kind)
		if r.kind == kKillNode && (r.count != 2 || r.failed != 1 || r.p50 != 2*time.Second || r.max != 4*time.Second) {
			t.Errorf("kill-node row %+v", r)
		}
	}
	if got := strings.Join(kinds, ","); got != "kill-master,kill-node,op:rollout" {
		t.Errorf("rows %s", got)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-duration", "3m", "-seed", "7", "-ha", "-keep"})
	if err != nil || o.Duration != 3*time.Minute || o.Seed != 7 || !o.HA || !o.Keep || o.Bound != time.Minute {
		t.Fatalf("parseFlags = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-duration", "0s"}, {"-duration", "-1m"}, {"-bound", "1s"}, {"extra"}, {"-seed", "x"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestWantVersion(t *testing.T) {
	for in, want := range map[string]string{"": vNew, "latest": vNew, vOld: vOld, vNew: vNew} {
		if got := wantVersion(in); got != want {
			t.Errorf("wantVersion(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseEnviron(f *testing.F) {
	for _, s := range []string{"", "A=1\x00B=2", "\x00\x00=", "==\x00=a=b\x00K", strings.Repeat("X=", 1000), "SUTRA_AGENT_DATA=/tmp/\xff\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for k, v := range parseEnviron(b) {
			if k == "" || strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) || strings.ContainsRune(k, '=') {
				t.Fatalf("entry %q=%q", k, v)
			}
		}
	})
}

func FuzzMetricValue(f *testing.F) {
	for _, s := range []string{"go_goroutines 41\n", "go_goroutines\n", "go_goroutines ", "#go_goroutines 1", "go_goroutines +Inf", "go_goroutines 1e400", "go_goroutines{a=\"b\"} 3\ngo_goroutines 4"} {
		f.Add([]byte(s), "go_goroutines")
	}
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		v, ok := metricValue(b, name)
		if !ok && v != 0 {
			t.Fatalf("not found but value %v", v)
		}
	})
}

func FuzzProcState(f *testing.F) {
	for _, s := range []string{"1 (x) S", ")", "))", "1 (x)", "(", "1 () R 2", "1 (a) b) ) Z"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, ok := procState(b)
		if ok && st == 0 && !strings.Contains(string(b), ") \x00") {
			t.Fatalf("ok with state 0 on %q", b)
		}
	})
}
