package httpserver

import (
	"io"
	"net/http"
	"time"
)

// observe reports every request next answers to obs (nil: next as is),
// outermost so that refusals (429, 400, 404) and recovered panics count.
// The route is mux's pattern for the request, looked up before next runs.
func observe(obs Observer, mux *http.ServeMux, next http.Handler) http.Handler {
	if obs == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := ""
		if canonical(r.URL.Path) {
			_, route = mux.Handler(r)
		}
		cw := &countingWriter{ResponseWriter: w}
		defer func() {
			code := cw.code
			if code == 0 {
				code = http.StatusOK
			}
			obs.ObserveHTTP(route, r.Method, code, cw.bytes, time.Since(start))
		}()
		next.ServeHTTP(cw, r)
	})
}

// countingWriter records the status code and counts body bytes. It keeps
// io.ReaderFrom (sendfile for downloads) and exposes the writer under it
// to http.ResponseController (Flush, deadlines).
type countingWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.code == 0 && code >= 200 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.bytes += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(c.ResponseWriter, r)
	}
	c.bytes += n
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
