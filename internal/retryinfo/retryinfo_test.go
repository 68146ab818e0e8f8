package retryinfo

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func withDetail(code codes.Code, d *durationpb.Duration) error {
	st, err := status.New(code, "x").WithDetails(&errdetails.RetryInfo{RetryDelay: d})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestDelay(t *testing.T) {
	err := Error(1500*time.Millisecond, "too many calls")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "too many calls; retry in 2s") {
		t.Fatalf("Error = %v", err)
	}
	if d, ok := Requested(withDetail(codes.ResourceExhausted, durationpb.New(100*time.Hour))); d != 100*time.Hour || !ok {
		t.Errorf("Requested(100h) = %s, %v, want 100h uncapped", d, ok)
	}
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
		ok   bool
	}{
		{"plain", err, 1500 * time.Millisecond, true},
		{"wrapped", fmt.Errorf("heartbeat: %w", err), 1500 * time.Millisecond, true},
		{"unavailable", withDetail(codes.Unavailable, durationpb.New(time.Second)), time.Second, true},
		{"capped", withDetail(codes.ResourceExhausted, durationpb.New(100*time.Hour)), MaxDelay, true},
		{"negative", withDetail(codes.ResourceExhausted, &durationpb.Duration{Seconds: -5}), 0, true},
		{"invalid", withDetail(codes.ResourceExhausted, &durationpb.Duration{Seconds: 1, Nanos: -1}), 0, false},
		{"other code", withDetail(codes.Internal, durationpb.New(time.Second)), 0, false},
		{"no detail", status.Error(codes.ResourceExhausted, "message too large"), 0, false},
		{"nil", nil, 0, false},
		{"not a status", fmt.Errorf("boom"), 0, false},
	} {
		got, ok := Delay(tc.err)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: Delay = %s, %v, want %s, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
