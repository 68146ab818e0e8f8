// Package master runs the Sutra Grid master: the HTTP binary distribution
// server (master/catalog + master/binapi) on HTTP_PORT and the gRPC endpoint
// on GRPC_PORT, which serves the standard health service and reflection and
// hosts the control plane (master/controlplane).
//
// Run is the master's composition root: it owns the listeners, the
// *grpc.Server, the *http.ServeMux and the HTTP layer in front of it
// (master/httpserver), and hands each part what it needs; no part imports
// this package. Shutdown (ctx cancelled) stops accepting, lets
// running downloads and RPCs finish for up to Options.ShutdownTimeout, then
// cuts what remains.
package master

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/version"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/binapi"
	"github.com/sutragrid/sutra/master/binpeers"
	"github.com/sutragrid/sutra/master/catalog"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/controlplane"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/httpserver"
	"github.com/sutragrid/sutra/master/metrics"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/ratelimit"
	"github.com/sutragrid/sutra/master/ui"
)

// Run serves until ctx ends, then shuts down gracefully. It returns nil
// after a normal stop and an error a user can act on otherwise.
func Run(ctx context.Context, opts Options) (err error) {
	if err := opts.Validate(); err != nil {
		return err
	}
	opts.setDefaults()
	log, con := opts.Logger, opts.Console
	con = &lockedWriter{w: con} // start-up lines and catalog events come from several goroutines

	httpLn, err := listen(ctx, "HTTP", opts.HTTPAddr, "HTTP_PORT", "--http-port")
	if err != nil {
		return err
	}
	defer httpLn.Close()
	grpcLn, err := listen(ctx, "gRPC", opts.GRPCAddr, "GRPC_PORT", "--grpc-port")
	if err != nil {
		return err
	}
	defer grpcLn.Close()
	addrs := Addrs{HTTP: httpLn.Addr().String(), GRPC: grpcLn.Addr().String()}

	showGRPC, showHTTP := display(opts.GRPCAddr, addrs.GRPC), display(opts.HTTPAddr, addrs.HTTP)
	httpName := "HTTP"
	if opts.HTTPTLS {
		httpName, showHTTP = "HTTPS", "https://"+showHTTP
	}
	fmt.Fprintf(con, "🚀 Sutra Grid Master v%s starting\n", version.Version)
	fmt.Fprintf(con, "  📡 gRPC: %s\n", showGRPC)
	fmt.Fprintf(con, "  🌐 %s: %s\n", httpName, showHTTP)
	log.Info("master starting", "version", version.Version, "grpc", addrs.GRPC, "http", addrs.HTTP,
		"binaries_dir", opts.BinariesDir, "data_dir", opts.DataDir)

	// --store etcd: join the masters on the shared store before anything
	// reads trust or state from it.
	me := self(opts, addrs, time.Now())
	sh, err := openShared(ctx, opts, me, log)
	if err != nil {
		return err
	}
	defer sh.close(log)
	coord := sh.coordinator()
	if coord == nil {
		coord = cluster.NewSingle(me)
	} else {
		fmt.Fprintf(con, "  🗄️  Store: etcd at %s (prefix %s), master id %s, leader lease %s\n",
			strings.Join(opts.Store.EtcdEndpoints, ","), sh.st.Prefix(), me.ID, opts.Store.LeaderLease)
	}
	opts.ControlPlane.Store, opts.ControlPlane.Coordinator = sh.storeOf(), coord

	scanStart := time.Now()
	cat, err := catalog.Open(ctx, catalog.Options{
		Dir: opts.BinariesDir, DataDir: opts.DataDir, Logger: log.With("component", "catalog"),
		HashWorkers: opts.HashWorkers, Settle: opts.Settle, OnEvent: consoleEvents(con),
		HashInBackground: true, // serve at once; binaries are published as they are hashed
	})
	if err != nil {
		return err
	}
	defer cat.Close()
	// The design document's "Auto-registered" line comes once every binary
	// found at start-up is registered: at once when the checksum cache knows
	// them all, otherwise after hashing, which does not hold serving up.
	// Files written just before start-up are registered once they settle,
	// after these lines: they say how many, so the count is not a surprise.
	at := cat.AtOpen()
	n, hashing, settling := at.Registered, at.Hashing, at.Settling
	switch {
	case hashing == 0 && settling == 0:
		fmt.Fprintf(con, "📦 Auto-registered %d binaries\n", n)
	case hashing == 0:
		fmt.Fprintf(con, "📦 Auto-registered %d binaries, %d settling (written just before start-up; each is registered once it stops changing)\n", n, settling)
	case settling == 0:
		fmt.Fprintf(con, "⏳ Hashing %d binaries in the background (%d registered from the checksum cache); each is served once hashed\n", hashing, n)
	default:
		fmt.Fprintf(con, "⏳ Hashing %d binaries in the background (%d registered from the checksum cache, %d settling); each is served once hashed\n", hashing, n, settling)
	}
	log.Info("binaries registered", "count", n, "hashing", hashing, "settling", settling, "dir", cat.Dir(),
		"from_cache", cat.Stats().CacheHits, "took_ms", sinceMillis(scanStart))

	// Metrics (master/metrics): one registry of this master, fed by the
	// servers' interceptors and middleware, the rest read at scrape time.
	var met *metrics.Metrics
	var httpObs httpserver.Observer
	var dlObs binapi.DownloadObserver
	if !opts.NoMetrics {
		met = metrics.New(version.Version).WithHeartbeatSummary(grpcapi.HeartbeatSummary)
		httpObs, dlObs = met, met
		opts.ControlPlane.WrapStore = met.Store
	}
	api, err := binapi.New(binapi.Options{Catalog: cat, Logger: log.With("component", "binapi"),
		MaxConcurrentDownloads: opts.MaxConcurrentDownloads, StallTimeout: opts.DownloadStallTimeout,
		MaxEgress: opts.MaxEgress, MaxDownloadRate: opts.MaxDownloadRate, Observer: dlObs})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	// --private-downloads: the binary routes live on their own mux, mounted
	// on mux behind the agent-or-operator check once the trust is loaded.
	binMux := mux
	if opts.PrivateDownloads {
		binMux = http.NewServeMux()
	}
	api.Register(binMux)

	// Trust (issue 12): the CA and server certificate in {DataDir}/tls, the
	// operator token in {DataDir}/admin.token; gRPC is TLS only.
	// With several masters (etcd) the CA, its key, the ticket keys and the
	// operator token are shared through the store (only masters can read
	// it); never through bbolt, which would put the CA key into backups.
	sharedStore := sh.storeOf()
	ca, err := pki.OpenContext(ctx, pki.Options{Dir: filepath.Join(opts.DataDir, "tls"), AdvertiseNames: opts.Advertise,
		Logger: log.With("component", "pki"), Shared: sharedStore})
	if err != nil {
		return fmt.Errorf("master certificates: %w", err)
	}
	tickCtx, stopTicks := context.WithCancel(context.WithoutCancel(ctx))
	ticksDone := make(chan struct{})
	go func() { defer close(ticksDone); ca.Run(tickCtx) }()
	defer func() { stopTicks(); <-ticksDone }()
	tokenPath := filepath.Join(opts.DataDir, auth.TokenFile)
	var opToken string
	var created bool
	if sharedStore != nil {
		opToken, created, err = auth.LoadOrCreateSharedToken(ctx, sharedStore, tokenPath, log.With("component", "auth"))
	} else {
		opToken, created, err = auth.LoadOrCreateToken(tokenPath)
	}
	if err != nil {
		return err
	}
	policy, err := auth.NewPolicy(opToken)
	if err != nil {
		return fmt.Errorf("operator token %s: %w", tokenPath, err)
	}
	if abs, err := filepath.Abs(tokenPath); err == nil {
		tokenPath = abs
	}
	if created {
		fmt.Fprintf(con, "  🔑 Operator token created: %s (0600; the sutra CLI reads it from there)\n", tokenPath)
	} else {
		fmt.Fprintf(con, "  🔑 Operator token: %s\n", tokenPath)
	}
	fmt.Fprintf(con, "  🔒 CA fingerprint: %s (join tokens pin it)\n", ca.Fingerprint())
	log.Info("trust ready", "operator_token_file", tokenPath, "token_created", created, "ca_fingerprint", ca.Fingerprint())
	if opts.PrivateDownloads {
		guarded := policy.RequireAgentOrOperator(httpserver.Handler(binMux, log.With("component", "binapi")), opts.AgentCheck)
		for _, p := range binaryRoutes {
			mux.Handle(p, guarded)
		}
		fmt.Fprintf(con, "  🔐 Private downloads: binaries only for enrolled agents (their certificate) and the operator token\n")
	}

	// One set of rate limit buckets for both servers: an address's budget
	// is one budget.
	limits, err := ratelimit.New(opts.RateLimits)
	if err != nil {
		return err
	}
	grpcSrv := newGRPCServer(opts, log.With("component", "grpc"), credentials.NewTLS(ca.ServerTLSConfig()), policy, limits, met)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(grpcSrv, healthSrv)
	reflection.Register(grpcSrv)

	// The control plane: the fleet in DataDir with its gRPC service, fleet
	// routes and backup route. Its sweep runs until both servers have
	// stopped; then the store is closed.
	cp, err := controlplane.Open(ctx, opts.DataDir, log, opts.ControlPlane)
	if err != nil {
		return fmt.Errorf("start the control plane: %w", err)
	}
	api.SetYanked(cp.Releases())
	if sh != nil {
		// Several masters, each with its own BINARIES_DIR: publish only
		// files whose checksum the masters agree on, redirect downloads of
		// files another master holds (master/binpeers).
		reg, err := binpeers.New(ctx, binpeers.Options{Store: sh.st, Coordinator: coord, Catalog: cat, Logger: log.With("component", "binpeers")})
		if err != nil {
			_ = cp.Close()
			return fmt.Errorf("binaries registry: %w", err)
		}
		defer reg.Close()
		api.SetPeers(reg)
	}
	if err := cp.Register(grpcSrv, mux, healthSrv, controlplane.Trust{PKI: ca, Operator: policy, ClientLifetime: opts.ClientCertLifetime, ReleasePublicKeys: opts.ReleasePublicKeys}); err != nil {
		_ = cp.Close()
		return err
	}
	if met != nil {
		met.AddSources(metrics.Sources{Fleet: cp.Fleet(), Catalog: cat, Downloads: api, Certs: ca, Cluster: cluster.Gauges{C: coord}})
		// GET /metrics: the operator token unless --public-metrics.
		var h http.Handler = met.Handler()
		if !opts.PublicMetrics {
			h = policy.RequireOperator(h)
		}
		mux.Handle("GET "+metrics.Path, h)
	}
	// The web dashboard (master/ui) at /ui/; / sends a browser there.
	dash, err := ui.New(ui.Options{Fleet: cp.Fleet(), Catalog: cat, Yanked: cp.Releases().Yanked,
		CheckToken: ui.OperatorCheck(policy.RequireOperator), Secure: opts.HTTPTLS, Logger: log.With("component", "ui")})
	if err != nil {
		_ = cp.Close()
		return err
	}
	mux.Handle(ui.Prefix, dash.Handler())
	mux.Handle("GET /{$}", http.RedirectHandler(ui.Prefix, http.StatusFound))
	// Rollouts (master/rollout): GET /api/rollouts behind the operator
	// token; the controller steps with the sweep.
	rollouts, err := cp.Rollouts(ctx, grpcSrv, mux, policy, cat, len(opts.ReleasePublicKeys) > 0)
	if err != nil {
		_ = cp.Close()
		return err
	}
	dash.SetRollouts(ui.ControllerRollouts(rollouts))
	if met != nil {
		met.AddRollouts(rolloutCounts(rollouts))
	}
	sweepCtx, stopSweep := context.WithCancel(context.WithoutCancel(ctx))
	var sweep sync.WaitGroup
	sweep.Go(func() { _ = cp.Run(sweepCtx) })
	// Every master follows the rollouts; only the leader's steps pass its
	// fence (rollout.Options.Fence), so followers' Run waits harmlessly.
	sweep.Go(func() { _ = rollouts.Follow(sweepCtx) })
	sweep.Go(func() { _ = rollouts.Run(sweepCtx) })
	if sh != nil {
		// etcd keeps every revision until compacted: the leader compacts,
		// keeping enough history for watchers to resume.
		sweep.Go(func() {
			cluster.RunWhileLeading(sweepCtx, coord, func(ctx context.Context) {
				sh.st.RunCompactor(ctx, compactEvery, compactKeep)
			})
		})
	}
	defer func() {
		stopSweep()
		sweep.Wait()
		if err := cp.Close(); err != nil {
			log.Error("close fleet store", "err", err)
		}
	}()
	if opts.testWiring != nil {
		opts.testWiring(cat, grpcSrv)
	}
	if met != nil {
		met.InitializeMetrics(grpcSrv)
	}

	// One server and one handler chain (panic recovery, canonical paths,
	// JSON 404/405) in front of every route on mux: the binary API, the
	// fleet API and the backup route.
	httpSrv := httpserver.New(httpserver.Options{
		Routes:            mux,
		Logger:            log.With("component", "http"),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		BaseContext:       context.WithoutCancel(ctx),
		Limits:            limits,
		Observer:          httpObs,
	})

	if opts.HTTPTLS {
		httpSrv.TLSConfig = httpTLSConfig(ca)
	}
	serveErr := make(chan error, 2)
	go func() {
		// httpjson.Listener: net/http's own 400/431/501 answers are JSON too
		// (over TLS only those before the handshake, like a plain HTTP
		// request to the HTTPS port).
		serve := httpSrv.Serve
		if opts.HTTPTLS {
			serve = func(ln net.Listener) error { return httpSrv.ServeTLS(ln, "", "") }
		}
		if err := serve(httpjson.Listener(httpLn)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("HTTP server: %w", err)
		}
	}()
	go func() {
		if err := grpcSrv.Serve(grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	fmt.Fprintf(con, "📡 Listening for agent connections on %s\n", showGRPC)
	fmt.Fprintf(con, "🌐 %s binary server started on %s\n", httpName, showHTTP)
	log.Info("master serving", "grpc", addrs.GRPC, "http", addrs.HTTP, "http_tls", opts.HTTPTLS, "private_downloads", opts.PrivateDownloads)
	hashed := make(chan struct{})
	hctx, hcancel := context.WithCancel(ctx)
	defer func() { hcancel(); <-hashed }()
	go func() {
		defer close(hashed)
		if cat.WaitHashed(hctx) != nil {
			return
		}
		if hashing > 0 {
			s, total := cat.Stats(), len(cat.List(""))
			fmt.Fprintf(con, "📦 Auto-registered %d binaries\n", total)
			log.Info("start-up hashing done", "count", total, "hashed_files", s.HashedFiles,
				"hashed_bytes", s.HashedBytes, "took_ms", sinceMillis(scanStart))
		}
		if opts.Ready != nil {
			opts.Ready(addrs)
		}
	}()

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}

	log.Info("master shutting down", "active_downloads", api.ActiveDownloads(), "grace", opts.ShutdownTimeout)
	healthSrv.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	grpcDone := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(grpcDone) }()
	if herr := httpSrv.Shutdown(sctx); herr != nil {
		log.Warn("downloads still running at the end of the grace period were cut", "grace", opts.ShutdownTimeout, "err", herr)
		httpSrv.Close()
	}
	select {
	case <-grpcDone:
	case <-sctx.Done():
		grpcSrv.Stop()
		<-grpcDone
	}
	log.Info("master stopped")
	return err
}

// binaryRoutes are the paths of the binary API, which --private-downloads
// guards.
var binaryRoutes = []string{"/api/binaries", "/api/binaries/", "/api/artifacts", "/api/artifacts/", "/binaries/"}

// httpTLSConfig is --http-tls: the gRPC server's certificate and client CA
// (a client certificate is verified when given, so agents can present
// theirs), TLS 1.2 or later for HTTP clients such as curl.
func httpTLSConfig(ca *pki.PKI) *tls.Config {
	c := ca.ServerTLSConfig()
	c.MinVersion = tls.VersionTLS12
	return c
}

// listen binds addr, turning "address in use" into one line that says what to change.
func listen(ctx context.Context, what, addr, env, flag string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err == nil {
		return ln, nil
	}
	_, port, _ := net.SplitHostPort(addr)
	if isAddrInUse(err) {
		return nil, fmt.Errorf("%s port %s is in use: set %s (or %s) to a free port", what, port, env, flag)
	}
	return nil, fmt.Errorf("%s: cannot listen on %s (set %s or %s): %w", what, addr, env, flag, err)
}

func isAddrInUse(err error) bool {
	if errors.Is(err, syscall.EADDRINUSE) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "address already in use") || // unix
		strings.Contains(msg, "Only one usage of each socket address") // windows WSAEADDRINUSE
}

// consoleEvents prints catalog changes in the design document's style.
func consoleEvents(w io.Writer) func(catalog.Event) {
	return func(e catalog.Event) {
		switch e.Kind {
		case catalog.Registered:
			fmt.Fprintf(w, "📦 Registering binary: %s %s %s\n", e.Binary.Version, e.Binary.Platform, e.Binary.Arch)
			fmt.Fprintf(w, "✅ Binary registered: %s (%.2f MB)\n", e.Filename, float64(e.Binary.Size)/(1<<20))
		case catalog.Removed:
			fmt.Fprintf(w, "🗑️  Binary removed: %s (%s)\n", e.Filename, e.Reason)
		case catalog.Changed:
			fmt.Fprintf(w, "🔄 Binary changed on disk, verifying again: %s\n", e.Filename)
		case catalog.Skipped:
			fmt.Fprintf(w, "⚠️  Skipped %s: %s\n", e.Filename, e.Reason)
		}
	}
}

// display is the address to show: the configured host (0.0.0.0 for a
// wildcard, as the design document prints it) with the bound port.
func display(configured, bound string) string {
	host, _, _ := net.SplitHostPort(configured)
	_, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, port)
}

// lockedWriter serialises writes to the console.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// sinceMillis is for log fields.
func sinceMillis(t time.Time) int64 { return time.Since(t).Milliseconds() }
