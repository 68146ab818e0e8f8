package binapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strings"

	"github.com/sutragrid/sutra/internal/httpjson"
)

// Wrap is the master's outermost HTTP layer, around the whole mux (this API's
// routes and any others registered on it):
//   - a panic is logged with its stack and answered 500 JSON, never a crash;
//   - a path that is not canonical ("..", ".", "//", NUL) is refused 400
//     instead of redirected;
//   - the mux's own "404 page not found" and "405 method not allowed" become
//     JSON {"error": ...}, keeping the Allow header.
func Wrap(mux *http.ServeMux, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic serving a request", "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				httpjson.WriteError(w, http.StatusInternalServerError, "internal error (logged by the master)")
			}
		}()
		p := r.URL.Path
		if r.Method != http.MethodConnect && !canonical(p) {
			httpjson.WriteError(w, http.StatusBadRequest, fmt.Sprintf("path %q is not canonical (no \".\", \"..\" or empty segments)", p))
			return
		}
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			httpjson.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, p, allow))
		default:
			httpjson.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such route: %s %s", r.Method, p))
		}
	})
}

func canonical(p string) bool {
	if p == "" || p[0] != '/' || strings.ContainsRune(p, 0) {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// statusRecorder captures the answer of the mux's fallback handlers.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(p), nil
}
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
