// Package retryinfo is the one definition, shared by the master and its
// clients, of how a gRPC server says "slow down": RESOURCE_EXHAUSTED (or
// UNAVAILABLE) with a google.rpc.RetryInfo detail carrying the delay
// before the next call is worth making. The master's rate limits
// (master/ratelimit) answer with Error; the agent and the CLI read the delay
// with Delay.
package retryinfo

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// MaxDelay caps what Delay reports: a server (or whoever sits between) that
// asks for more is not believed beyond it.
const MaxDelay = 5 * time.Minute

// Error is a RESOURCE_EXHAUSTED status with msg, the delay in words ("retry
// in 3s") and a RetryInfo detail carrying it.
func Error(delay time.Duration, msg string) error {
	delay = max(delay, 0)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("%s; retry in %s", msg, Round(delay)))
	if ds, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); err == nil {
		st = ds
	}
	return st.Err()
}

// Delay is the RetryInfo delay of a RESOURCE_EXHAUSTED or UNAVAILABLE
// error (which may be wrapped), capped at MaxDelay: what a program that
// retries by itself waits. ok is false when err carries none (or an invalid
// one).
func Delay(err error) (d time.Duration, ok bool) {
	d, ok = Requested(err)
	return min(d, MaxDelay), ok
}

// Requested is Delay without the cap: what the server asked for, for
// telling a person.
func Requested(err error) (d time.Duration, ok bool) {
	st, isStatus := status.FromError(err)
	if err == nil || !isStatus || (st.Code() != codes.ResourceExhausted && st.Code() != codes.Unavailable) {
		return 0, false
	}
	for _, detail := range st.Details() {
		ri, isRI := detail.(*errdetails.RetryInfo)
		if !isRI || ri.GetRetryDelay() == nil || ri.GetRetryDelay().CheckValid() != nil {
			continue
		}
		return max(ri.GetRetryDelay().AsDuration(), 0), true
	}
	return 0, false
}

// Round is d rounded up to whole seconds, at least one: how long a person
// or a Retry-After header is told to wait.
func Round(d time.Duration) time.Duration {
	return time.Duration(math.Ceil(max(d, time.Second).Seconds())) * time.Second
}
