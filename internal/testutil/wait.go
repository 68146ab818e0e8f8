package testutil

import (
	"testing"
	"time"
)

// pollInterval is how often WaitFor asks its condition again.
const pollInterval = 20 * time.Millisecond

// WaitFor polls cond until it holds, and fails the test after timeout with
// "timed out after <timeout> waiting for <what>". Timeouts are generous on
// purpose (the machine running the tests may be loaded): they bound a hung
// test, they are not an assertion on speed.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
			return
		}
		time.Sleep(pollInterval)
	}
}
