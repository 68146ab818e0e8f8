//go:build unix

package supervisor

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
)

// BenchmarkStartToHealthy measures Start → first healthy probe → Stop of a
// small HTTP child (the test binary in "serve" mode).
func BenchmarkStartToHealthy(b *testing.B) {
	s, err := New(Options{LogDir: b.TempDir(), Health: HealthOptions{Interval: time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		ln := testutil.FreePort(b)
		spec := Spec{Name: "bench", Path: helperPath(b), Env: []string{helperEnv + "=serve", "HELPER_PORT=" + strconv.Itoa(ln)}, HealthURL: HealthURL(ln)}
		n, err := s.Start(spec)
		if err != nil {
			b.Fatal(err)
		}
		for n.Status().State != StateRunning {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		if err := s.Stop(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkPolicyDecide(b *testing.B) {
	p, err := NewPolicy(PolicyOptions{MaxFailures: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p.Started()
		p.Healthy()
		p.Decide(InputExited)
	}
}
