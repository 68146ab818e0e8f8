package fetch

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// throttleChunk is the unit the download rate limit is taken in.
const throttleChunk = 32 << 10

// newLimiter returns the limiter of a download rate in bytes per second
// (0: none). It starts empty, so the first bytes are paced too.
func newLimiter(bps int64) *rate.Limiter {
	if bps <= 0 {
		return nil
	}
	l := rate.NewLimiter(rate.Limit(bps), throttleChunk)
	l.AllowN(time.Now(), throttleChunk)
	return l
}

// throttle waits until n more bytes fit the download rate limit.
func (f *Fetcher) throttle(ctx context.Context, n int) error {
	for n > 0 {
		k := min(n, throttleChunk)
		if err := f.limiter.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
