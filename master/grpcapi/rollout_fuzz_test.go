package grpcapi

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// FuzzStartRolloutRequest: any request is either a valid spec or an
// INVALID_ARGUMENT, never a panic or another code.
func FuzzStartRolloutRequest(f *testing.F) {
	f.Add("storage-server", "1.2.3", "a,b", "zone", "a", uint32(1), "50,100", uint32(1), uint64(5000), uint64(60000), uint64(600000), uint32(0), 0.1, "pause")
	f.Add("sutra-agent", "latest", "", "", "", uint32(0), "100,50", uint32(0), uint64(0), uint64(0), uint64(1<<63), uint32(1<<31), -1.0, "rollback")
	f.Add("\xff", "1.2.3\x00", strings.Repeat(",", 100), "\n", "\xff", uint32(1<<32-1), "0,0,255", uint32(1<<32-1), uint64(1<<64-1), uint64(1), uint64(2), uint32(5), 1e308, "x")
	f.Fuzz(func(t *testing.T, artifact, version, agents, selK, selV string, canary uint32, waves string, par uint32, soak, hd, pd uint64, maxf uint32, ratio float64, onf string) {
		req := &gridv1.StartRolloutRequest{Artifact: artifact, Version: version, Canary: canary, MaxParallel: par,
			SoakMs: soak, HealthyDeadlineMs: hd, ProgressDeadlineMs: pd, MaxFailures: maxf, MaxFailureRatio: ratio, OnFailure: onf}
		if agents != "" {
			req.Agents = strings.Split(agents, ",")
		}
		if selK != "" {
			req.Selector = map[string]string{selK: selV}
		}
		for _, w := range strings.Split(waves, ",") {
			n := uint32(0)
			for _, c := range w {
				n = n*10 + uint32(c-'0')%10
			}
			req.Waves = append(req.Waves, n)
		}
		s, err := SpecFromPB(req)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code %s: %v", status.Code(err), err)
			}
			return
		}
		s = s.WithDefaults()
		if s.Soak >= s.HealthyDeadline || s.HealthyDeadline >= s.ProgressDeadline || s.Soak < 0 {
			t.Fatalf("accepted durations %v %v %v", s.Soak, s.HealthyDeadline, s.ProgressDeadline)
		}
	})
}
