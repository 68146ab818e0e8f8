package binapi

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// stallWriter bounds how long a download may make no progress: before each
// write it sets the connection's write deadline to now+timeout, so a client
// that stops reading makes the write fail after timeout and the handler
// returns, releasing its download slot. ReadFrom hands the file to the next
// writer in chunks of stallChunk bytes, each still an *io.LimitedReader over
// the *os.File, so the kernel keeps copying it (sendfile) and the deadline is
// renewed between chunks.
type stallWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	sent    int64
	err     error // the first write error
}

// newStallWriter wraps next; conn is the handler's own ResponseWriter, the
// one http.ResponseController reaches the connection through.
func newStallWriter(next, conn http.ResponseWriter, timeout time.Duration) *stallWriter {
	return &stallWriter{ResponseWriter: next, rc: http.NewResponseController(conn), timeout: timeout}
}

func (w *stallWriter) renew() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

// done clears the deadline so a kept-alive connection's next answer is not cut.
func (w *stallWriter) done() { _ = w.rc.SetWriteDeadline(time.Time{}) }

// stalled reports whether the download ended on the write deadline.
func (w *stallWriter) stalled() bool { return errors.Is(w.err, os.ErrDeadlineExceeded) }

func (w *stallWriter) note(n int, err error) {
	w.sent += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
}

func (w *stallWriter) WriteHeader(code int) {
	w.renew()
	w.ResponseWriter.WriteHeader(code)
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.renew()
	n, err := w.ResponseWriter.Write(p)
	w.note(n, err)
	return n, err
}

func (w *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		w.renew()
		return io.Copy(writerOnly{w}, src)
	}
	lr, limited := src.(*io.LimitedReader)
	if !limited {
		// Not ServeContent's shape; read it through a bounded reader all the same.
		lr = &io.LimitedReader{R: src, N: 1<<63 - 1}
	}
	var total int64
	for lr.N > 0 {
		w.renew()
		chunk := &io.LimitedReader{R: lr.R, N: min(lr.N, stallChunk)}
		want := chunk.N
		n, err := rf.ReadFrom(chunk)
		total += n
		lr.N -= n
		w.note(0, err)
		w.sent += n
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
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides ReadFrom so io.Copy does not recurse into it.
type writerOnly struct{ io.Writer }
