// Package storagenode is the reference storage node the grid distributes
// (cmd/storage-server): a small HTTP key-value server backed by an embedded
// bbolt database in its data directory.
//
// API:
//
//	PUT    /kv/{key}  store the request body (at most MaxValueBytes) -> 200 {"key", "bytes", "created"}
//	GET    /kv/{key}  the stored bytes (application/octet-stream), 404 when missing
//	DELETE /kv/{key}  204, or 404 when missing
//	GET    /healthz   200 {"status":"ok","node_id","version"} once the database is open and
//	                  the node can serve; 503 while opening or shutting down
//	GET    /version   200 {"version","node_id"}
//
// Every error is a JSON body {"error": "..."} with a 4xx status (5xx only when
// the database itself fails). A PUT is acknowledged only after bbolt has
// committed and fsynced the transaction, so an acknowledged write survives a
// SIGKILL of the process or a power loss.
//
// Trust model: none. The node serves anyone who can reach its port; keys are
// validated only so that they are sane bytes, not for authorization.
package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/sutragrid/sutra/internal/httpjson"
)

const (
	// MaxValueBytes is the largest value a PUT accepts (1 MiB); larger bodies get 413.
	MaxValueBytes = 1 << 20
	// MaxKeyBytes is the longest key accepted.
	MaxKeyBytes = 1024
	// DBFileName is the database file inside the data directory.
	DBFileName = "data.db"
)

var bucketName = []byte("kv")

// ErrInvalidKey reports a key that is empty, too long, not UTF-8, or holds
// whitespace or control characters.
var ErrInvalidKey = errors.New("invalid key")

// Options configure a Server.
type Options struct {
	// DataDir holds the database file (DBFileName); created when missing. Required.
	DataDir string
	// NodeID names this node in /healthz, /version and logs.
	NodeID string
	// Version is reported by /healthz and /version (internal/version.Version).
	Version string
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// OpenTimeout bounds the wait for the database file lock (another process
	// holding the same data dir). Default 10 s.
	OpenTimeout time.Duration
	// FailHealth makes /healthz answer 503 forever while the node otherwise
	// works: a test knob for supervisors ("alive but unhealthy").
	FailHealth bool
	// RequestTimeout bounds reading one request, headers and body (a PUT
	// sent slowly or never finished is answered 408 and its connection
	// closed), and writing its answer. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle for this long.
	// Default DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Defaults of Options' timeouts.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	// readHeaderTimeout bounds the request headers alone (slow-loris).
	readHeaderTimeout = 10 * time.Second
)

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty (set --data-dir or STORAGE_PATH)"))
	}
	if o.OpenTimeout < 0 {
		errs = append(errs, fmt.Errorf("open timeout %s is negative", o.OpenTimeout))
	}
	if o.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %s is negative", o.RequestTimeout))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle timeout %s is negative", o.IdleTimeout))
	}
	return errors.Join(errs...)
}

// Server is the key-value HTTP handler and its database.
type Server struct {
	opts  Options
	log   *slog.Logger
	db    atomic.Pointer[bolt.DB]
	ready atomic.Bool
	mux   *http.ServeMux
}

// New returns a Server that answers 503 until Open succeeds.
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("storage node options: %w", err)
	}
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = 10 * time.Second
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("/kv/{key...}", s.handleKV)
	s.mux.HandleFunc("/healthz", s.handleHealth)
	s.mux.HandleFunc("/version", s.handleVersion)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpjson.WriteError(w, http.StatusNotFound, "no such endpoint: use /kv/{key}, /healthz or /version")
	})
	return s, nil
}

// Open opens (or creates) the database and makes the node ready to serve.
func (s *Server) Open() error {
	if err := os.MkdirAll(s.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(s.opts.DataDir, DBFileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: s.opts.OpenTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("open %s: another process holds it (stop the other storage-server using this data dir): %w", path, err)
		}
		return fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	}); err != nil {
		_ = db.Close()
		return fmt.Errorf("init %s: %w", path, err)
	}
	s.db.Store(db)
	s.ready.Store(true)
	s.log.Info("database open", "path", path)
	return nil
}

// Draining marks the node not ready: /healthz answers 503 while in-flight
// requests finish.
func (s *Server) Draining() { s.ready.Store(false) }

// Close closes the database; later requests get 503.
func (s *Server) Close() error {
	s.ready.Store(false)
	db := s.db.Swap(nil)
	if db == nil {
		return nil
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	return nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// ValidateKey returns ErrInvalidKey (wrapped with the reason) for a key that
// cannot be stored.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty (use /kv/{key})", ErrInvalidKey)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidKey)
	}
	for _, r := range key {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: holds whitespace or a control character (%U)", ErrInvalidKey, r)
		}
	}
	return nil
}

type health struct {
	Status  string `json:"status"`
	NodeID  string `json:"node_id"`
	Version string `json:"version"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	switch {
	case s.opts.FailHealth:
		httpjson.Write(w, http.StatusServiceUnavailable, health{Status: "failing (test knob)", NodeID: s.opts.NodeID, Version: s.opts.Version})
	case !s.ready.Load():
		httpjson.Write(w, http.StatusServiceUnavailable, health{Status: "unavailable", NodeID: s.opts.NodeID, Version: s.opts.Version})
	default:
		httpjson.Write(w, http.StatusOK, health{Status: "ok", NodeID: s.opts.NodeID, Version: s.opts.Version})
	}
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]string{"version": s.opts.Version, "node_id": s.opts.NodeID})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	httpjson.WriteError(w, http.StatusMethodNotAllowed, "method not allowed (allowed: "+allow+")")
}

type putResult struct {
	Key     string `json:"key"`
	Bytes   int    `json:"bytes"`
	Created bool   `json:"created"`
}

func (s *Server) handleKV(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := ValidateKey(key); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	db := s.db.Load()
	if db == nil || !s.ready.Load() {
		w.Header().Set("Retry-After", "1")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "node is not ready (database opening or shutting down); retry")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.get(w, db, key)
	case http.MethodPut:
		s.put(w, r, db, key)
	case http.MethodDelete:
		s.delete(w, db, key)
	default:
		methodNotAllowed(w, "GET, HEAD, PUT, DELETE")
	}
}

func (s *Server) get(w http.ResponseWriter, db *bolt.DB, key string) {
	var val []byte
	found := false
	err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketName).Get([]byte(key)); v != nil {
			val, found = append([]byte(nil), v...), true
		}
		return nil
	})
	if err != nil {
		s.dbError(w, "get", key, err)
		return
	}
	if !found {
		httpjson.WriteError(w, http.StatusNotFound, "key not found: "+key)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(val)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(val)
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, db *bolt.DB, key string) {
	if r.ContentLength > MaxValueBytes {
		httpjson.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("value is %d bytes, the limit is %d", r.ContentLength, MaxValueBytes))
		return
	}
	val, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxValueBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpjson.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("value exceeds the limit of %d bytes", MaxValueBytes))
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.Header().Set("Connection", "close")
			httpjson.WriteError(w, http.StatusRequestTimeout, fmt.Sprintf("the request body was not received within %s", s.opts.RequestTimeout))
			return
		}
		httpjson.WriteError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	created := false
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		created = b.Get([]byte(key)) == nil
		return b.Put([]byte(key), val)
	})
	if err != nil {
		s.dbError(w, "put", key, err)
		return
	}
	httpjson.Write(w, http.StatusOK, putResult{Key: key, Bytes: len(val), Created: created})
}

func (s *Server) delete(w http.ResponseWriter, db *bolt.DB, key string) {
	found := false
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		if b.Get([]byte(key)) == nil {
			return nil
		}
		found = true
		return b.Delete([]byte(key))
	})
	if err != nil {
		s.dbError(w, "delete", key, err)
		return
	}
	if !found {
		httpjson.WriteError(w, http.StatusNotFound, "key not found: "+key)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) dbError(w http.ResponseWriter, op, key string, err error) {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		httpjson.WriteError(w, http.StatusServiceUnavailable, "node is shutting down; retry on another node")
		return
	}
	s.log.Error("database error", "op", op, "key", key, "err", err)
	httpjson.WriteError(w, http.StatusInternalServerError, op+" failed: database error (see the node's log)")
}

// httpServer bounds every phase of a connection: headers, the whole request
// (body included), the answer, and idleness between requests, so slow or
// stalled clients cannot hold connections and goroutines open.
func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: min(readHeaderTimeout, s.opts.RequestTimeout),
		// ReadTimeout is a deadline for the whole request from its first
		// byte: a body trickled in is cut as surely as one never sent.
		ReadTimeout: s.opts.RequestTimeout,
		// The answer (at most MaxValueBytes) is written within the same span again.
		WriteTimeout:   2 * s.opts.RequestTimeout,
		IdleTimeout:    s.opts.IdleTimeout,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// ShutdownTimeout bounds the wait for in-flight requests on shutdown, so the
// process exits well within 5 s of SIGTERM.
const ShutdownTimeout = 3 * time.Second

// Run listens on addr, opens the database and serves until ctx ends; then it
// stops accepting, lets in-flight requests finish (at most ShutdownTimeout),
// closes the database and returns nil. Listening happens before the database
// opens so that the port is taken at once; /healthz answers 503 until the
// database is open. ready, when non-nil, is called with the bound address
// once the node can serve.
func Run(ctx context.Context, addr string, opts Options, ready func(addr string)) error {
	s, err := New(opts)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (choose another --port or free it): %w", addr, err)
	}
	srv := s.httpServer()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(httpjson.Listener(ln)) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "node_id", opts.NodeID, "version", opts.Version)

	shutdown := func() error {
		s.Draining()
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		if err != nil {
			s.log.Warn("in-flight requests did not finish in time; closing them", "err", err)
			_ = srv.Close()
		}
		if cerr := s.Close(); cerr != nil {
			return cerr
		}
		s.log.Info("stopped")
		return nil
	}

	if err := s.Open(); err != nil {
		_ = shutdown()
		return err
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "cause", context.Cause(ctx))
		return shutdown()
	case err := <-serveErr:
		_ = s.Close()
		return fmt.Errorf("serve: %w", err)
	}
}
