package binapi

import (
	"context"
	"io"
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// egressChunk is the unit of the bandwidth budget: a download waits for
// this many tokens of its own limiter and of the global one before each
// write of at most this size, so many downloads interleave finely on the
// global budget and none starves.
const egressChunk = 32 << 10

// egress is the bandwidth budget of the binary server: a global limiter
// (Options.MaxEgress) every download shares and a per-download cap
// (Options.MaxDownloadRate). rate.Limiter serves reservations in the order
// they are made, so downloads waiting on the global limiter take turns one
// chunk at a time: each gets an equal share. Nil fields mean unlimited.
type egress struct {
	global  *rate.Limiter
	perDown rate.Limit // 0: no per-download cap
}

// egressBurst is how much a limiter may send at once after an idle
// moment: a tenth of a second of its rate (at least one chunk). Tokens a
// busy or descheduled server could not use within that are lost, so the
// aggregate keeps to the budget on a loaded machine without bursting far
// above it.
func egressBurst(bps int64) int { return int(max(egressChunk, bps/10)) }

func newEgress(maxEgress, maxDownload int64) *egress {
	e := &egress{}
	if maxEgress > 0 {
		e.global = rate.NewLimiter(rate.Limit(maxEgress), egressBurst(maxEgress))
		// Start empty: the first downloads do not share a burst the
		// later ones never see.
		e.global.AllowN(time.Now(), egressBurst(maxEgress))
	}
	if maxDownload > 0 {
		e.perDown = rate.Limit(maxDownload)
	}
	return e
}

// limited reports whether downloads are limited at all.
func (e *egress) limited() bool { return e.global != nil || e.perDown > 0 }

// wrap returns next limited by the budget, or next itself when unlimited.
func (e *egress) wrap(ctx context.Context, next http.ResponseWriter) http.ResponseWriter {
	if !e.limited() {
		return next
	}
	w := &egressWriter{ResponseWriter: next, ctx: ctx, global: e.global}
	if e.perDown > 0 {
		w.own = rate.NewLimiter(e.perDown, egressChunk) // a download starts at its rate, no burst
	}
	return w
}

// egressWriter paces one download on its own limiter and the global one.
type egressWriter struct {
	http.ResponseWriter
	ctx         context.Context
	global, own *rate.Limiter
}

// wait takes n (≤ egressChunk) tokens from both limiters.
func (w *egressWriter) wait(n int) error {
	if w.own != nil {
		if err := w.own.WaitN(w.ctx, n); err != nil {
			return err
		}
	}
	if w.global != nil {
		if err := w.global.WaitN(w.ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (w *egressWriter) Write(p []byte) (int, error) {
	var total int
	for len(p) > 0 {
		n := min(len(p), egressChunk)
		if err := w.wait(n); err != nil {
			return total, err
		}
		m, err := w.ResponseWriter.Write(p[:n])
		total += m
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

// ReadFrom hands the file on in chunks, each still an *io.LimitedReader
// over the *os.File, so the next writer keeps using sendfile.
func (w *egressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	lr, limited := src.(*io.LimitedReader)
	if !limited {
		lr = &io.LimitedReader{R: src, N: 1<<63 - 1}
	}
	var total int64
	for lr.N > 0 {
		want := min(lr.N, egressChunk)
		if err := w.wait(int(want)); err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(&io.LimitedReader{R: lr.R, N: want})
		total += n
		lr.N -= n
		if err != nil {
			return total, err
		}
		if n < want { // end of file
			break
		}
	}
	return total, nil
}

// Unwrap lets http.ResponseController reach the connection.
func (w *egressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
