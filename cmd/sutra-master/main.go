// Command sutra-master runs the Sutra Grid master: the binary distribution
// HTTP API (HTTP_PORT, default 7001) and the gRPC control plane endpoint
// (GRPC_PORT, default 7000) with the fleet state in SUTRA_DATA_DIR. Everything but flag and environment parsing
// lives in package master.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sutragrid/sutra/internal/ratespec"
	"github.com/sutragrid/sutra/internal/version"
	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/controlplane"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/ratelimit"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, store.ErrDamaged), errors.Is(err, store.ErrEmpty), errors.Is(err, store.ErrRolledBack):
		// Restarting cannot help: the unit's RestartPreventExitStatus stops the loop.
		fmt.Fprintln(os.Stderr, "sutra-master:", err)
		os.Exit(exitNeedsOperator)
	default:
		fmt.Fprintln(os.Stderr, "sutra-master:", err)
		os.Exit(1)
	}
}

// exitNeedsOperator is the exit status when the fleet database needs an
// operator (damaged, empty or rolled back; see `sutra-master restore`).
const exitNeedsOperator = 3

var errUsage = errors.New("usage")

// setting is one flag with its environment variable.
type setting struct {
	flag, env, arg, help string
	def                  string
	value                *string
	isBool               bool // --flag alone means true
}

// boolValue is a string flag that may be given without a value (true).
type boolValue struct{ p *string }

func (b boolValue) String() string {
	if b.p == nil {
		return ""
	}
	return *b.p
}
func (b boolValue) Set(v string) error { *b.p = v; return nil }
func (b boolValue) IsBoolFlag() bool   { return true }

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 && dbCommands[args[0]] != "" {
		return runDB(ctx, args[0], args[1:], stdout, stderr, getenv)
	}
	fs := flag.NewFlagSet("sutra-master", flag.ContinueOnError)
	fs.SetOutput(stderr)
	settings := []*setting{
		{flag: "http-port", env: "HTTP_PORT", arg: "PORT", def: strconv.Itoa(master.DefaultHTTPPort), help: "HTTP port of the binary distribution API"},
		{flag: "grpc-port", env: "GRPC_PORT", arg: "PORT", def: strconv.Itoa(master.DefaultGRPCPort), help: "gRPC port of the control plane (health and reflection included)"},
		{flag: "binaries-dir", env: "BINARIES_DIR", arg: "DIR", def: master.DefaultBinariesDir, help: "directory of {artifact}-{version}-{platform}-{arch} files to serve (created if missing)"},
		{flag: "data-dir", env: "SUTRA_DATA_DIR", arg: "DIR", def: master.DefaultDataDir, help: "master state: the fleet database grid.db and the checksum cache (created if missing)"},
		{flag: "bind", env: "BIND_ADDRESS", arg: "HOST", def: "0.0.0.0", help: "address both servers listen on"},
		{flag: "max-downloads", env: "MAX_CONCURRENT_DOWNLOADS", arg: "N", def: "256", help: "concurrent downloads before answering 503 with Retry-After"},
		{flag: "max-agents", env: "MAX_AGENTS", arg: "N", def: strconv.Itoa(fleet.DefaultMaxAgents), help: "registered agents; a new agent beyond it is refused (RESOURCE_EXHAUSTED)"},
		{flag: "max-nodes", env: "MAX_NODES", arg: "N", def: strconv.Itoa(fleet.DefaultMaxNodes), help: "storage-node records of the whole fleet (each agent holds at most 1000)"},
		{flag: "max-watchers", env: "MAX_WATCHERS", arg: "N", def: strconv.Itoa(fleet.DefaultMaxWatchers), help: "concurrent `sutra events -f` watchers"},
		{flag: "grpc-max-streams", env: "GRPC_MAX_STREAMS", arg: "N", def: strconv.Itoa(master.DefaultGRPCMaxConcurrentStreams), help: "concurrent gRPC calls on one client connection"},
		{flag: "agent-gc-threshold", env: "AGENT_GC_THRESHOLD", arg: "DURATION", def: "24h", help: "remove offline agents without a heartbeat for longer (with their node records; event AgentRemoved); 0 never removes them"},
		{flag: "download-stall-timeout", env: "DOWNLOAD_STALL_TIMEOUT", arg: "DURATION", def: "30s", help: "close a download whose client reads nothing for this long, freeing its slot"},
		{flag: "max-egress", env: "SUTRA_MAX_EGRESS", arg: "RATE", def: "unlimited", help: "bandwidth budget of all binary downloads together, shared fairly among them, like 200MB/s or 50MiB/s; the metadata API is not counted"},
		{flag: "max-download-rate", env: "SUTRA_MAX_DOWNLOAD_RATE", arg: "RATE", def: "unlimited", help: "bandwidth cap of each binary download, like 20MB/s"},
		{flag: "advertise", env: "SUTRA_ADVERTISE", arg: "NAMES", def: "", help: "comma-separated extra DNS names or IP addresses agents use to reach this master, added to its TLS certificate in {data-dir}/tls"},
		{flag: "client-cert-lifetime", env: "CLIENT_CERT_LIFETIME", arg: "DURATION", def: "720h", help: "lifetime of the agent certificates issued at enrollment and renewal"},
		{flag: "rate-limit-identity", env: "SUTRA_RATE_LIMIT_IDENTITY", arg: "RATE", def: ratelimit.DefaultIdentity.String(), help: "calls per agent (its certificate) or operator (the token), as N/s|m|h:BURST, or off; over it gRPC answers RESOURCE_EXHAUSTED with retry info, HTTP 429 with Retry-After"},
		{flag: "rate-limit-address", env: "SUTRA_RATE_LIMIT_ADDRESS", arg: "RATE", def: ratelimit.DefaultAddress.String(), help: "calls per source address (IPv6: per /64), both servers together, or off; leave room for every agent behind one NAT address (10,000 agents heartbeating every 5 s make 2000/s)"},
		{flag: "rate-limit-enroll", env: "SUTRA_RATE_LIMIT_ENROLL", arg: "RATE", def: ratelimit.DefaultEnroll.String(), help: fmt.Sprintf("failed enrollment attempts per source address (a refused join token counts %d), or off; beyond it every attempt from that address is refused until the bucket refills, even with a correct token", ratelimit.FailureCost)},
		{flag: "http-tls", env: "SUTRA_HTTP_TLS", arg: "BOOL", def: "false", isBool: true, help: "serve the HTTP port over HTTPS with the master's server certificate in {data-dir}/tls (the one gRPC uses); agents trust it through the CA they pinned at enrollment and present their certificate"},
		{flag: "private-downloads", env: "SUTRA_PRIVATE_DOWNLOADS", arg: "BOOL", def: "false", isBool: true, help: "binary routes (/api/binaries, /api/artifacts, /binaries/) need an enrolled agent's certificate or the operator token (401 JSON otherwise); needs --http-tls"},
		{flag: "public-metrics", env: "SUTRA_PUBLIC_METRICS", arg: "BOOL", def: "false", isBool: true, help: "serve GET /metrics (Prometheus) without the operator token; by default it needs 'Authorization: Bearer <operator token>'"},
		{flag: "release-public-keys", env: "SUTRA_RELEASE_PUBLIC_KEYS", arg: "FILE|KEY,...", def: "", help: "release public keys (a sutra-release.pub file, or comma-separated \"RW…\" keys) handed to agents at enrollment; an agent uses them only when its config pins no security.release_public_keys, never to replace pinned keys"},
		{flag: "store", env: "SUTRA_STORE", arg: "bbolt|etcd", def: "bbolt", help: "where the fleet's state lives: bbolt (one master, grid.db in --data-dir) or etcd (several masters sharing one etcd cluster; see README \"High availability\")"},
		{flag: "etcd-endpoints", env: "SUTRA_ETCD_ENDPOINTS", arg: "URLS", def: "", help: "with --store etcd: comma-separated etcd client URLs, like https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379"},
		{flag: "etcd-prefix", env: "SUTRA_ETCD_PREFIX", arg: "PREFIX", def: etcdstore.DefaultPrefix, help: "with --store etcd: the key prefix of this grid in etcd (several grids can share one etcd)"},
		{flag: "etcd-cert", env: "SUTRA_ETCD_CERT", arg: "FILE", def: "", help: "with --store etcd: client certificate (PEM) the master presents to etcd; restrict etcd to the masters: it holds the CA key and the operator token"},
		{flag: "etcd-key", env: "SUTRA_ETCD_KEY", arg: "FILE", def: "", help: "with --store etcd: the client certificate's key (PEM)"},
		{flag: "etcd-ca", env: "SUTRA_ETCD_CA", arg: "FILE", def: "", help: "with --store etcd: CA bundle (PEM) that signed etcd's server certificates"},
		{flag: "master-id", env: "SUTRA_MASTER_ID", arg: "ID", def: "HOSTNAME-GRPCPORT", help: "with --store etcd: this master's unique name among the masters (letters, digits, . _ -, at most 63)"},
		{flag: "leader-lease", env: "SUTRA_LEADER_LEASE", arg: "DURATION", def: "5s", help: "with --store etcd: lease of a master's registration and leadership; a dead leader is replaced within about this long (2s to 60s)"},
		{flag: "log-level", env: "LOG_LEVEL", arg: "LEVEL", def: "info", help: "debug, info, warn or error"},
	}
	for _, s := range settings {
		if s.isBool {
			v := s.def
			s.value = &v
			fs.Var(boolValue{&v}, s.flag, s.help)
			continue
		}
		s.value = fs.String(s.flag, s.def, s.help)
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sutra-master [flags]\n\n")
		fmt.Fprintf(stderr, "Runs the Sutra Grid master: binaries in the binaries dir are served over HTTP\n")
		fmt.Fprintf(stderr, "(GET /api/binaries, /binaries/{filename}, ...) and the control plane over gRPC.\n")
		fmt.Fprintf(stderr, "Each flag can also be set by its environment variable; the flag wins.\n\n")
		for _, s := range settings {
			arg := s.arg
			if s.isBool {
				arg = "[=" + arg + "]"
			}
			def := ", default " + s.def
			if s.def == "" {
				def = ", no default"
			}
			fmt.Fprintf(stderr, "  --%s %s\n      %s (env %s%s)\n", s.flag, arg, s.help, s.env, def)
		}
		fmt.Fprintf(stderr, "  --version\n      print the version and exit\n")
		fmt.Fprintf(stderr, "\nFleet database commands (see `sutra-master COMMAND --help`):\n")
		for _, c := range []string{"backup", "restore", "reset-db", "accept-db"} {
			fmt.Fprintf(stderr, "  sutra-master %s\n", dbCommands[c])
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sutra-master: unexpected argument %q (see --help)\n", fs.Arg(0))
		return errUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Version)
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	val := map[string]string{}
	source := map[string]string{}
	for _, s := range settings {
		val[s.flag], source[s.flag] = *s.value, "--"+s.flag
		if !set[s.flag] {
			if v := getenv(s.env); v != "" {
				val[s.flag], source[s.flag] = v, s.env
			}
		}
	}

	var errs []error
	port := func(name string) int {
		p, err := strconv.Atoi(val[name])
		if err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s=%q is not a port number (0-65535)", source[name], val[name]))
		}
		return p
	}
	httpPort, grpcPort := port("http-port"), port("grpc-port")
	maxDl, err := strconv.Atoi(val["max-downloads"])
	if err != nil || maxDl < 1 {
		errs = append(errs, fmt.Errorf("%s=%q is not a positive number", source["max-downloads"], val["max-downloads"]))
	}
	count := func(name string, hi int) int {
		n, err := strconv.Atoi(val[name])
		if err != nil || n < 1 || n > hi {
			errs = append(errs, fmt.Errorf("%s=%q is not a number from 1 to %d", source[name], val[name], hi))
		}
		return n
	}
	maxAgents, maxNodes := count("max-agents", 10_000_000), count("max-nodes", 100_000_000)
	maxWatchers, grpcStreams := count("max-watchers", 100_000), count("grpc-max-streams", 100_000)
	gcThreshold, err := time.ParseDuration(val["agent-gc-threshold"])
	switch {
	case val["agent-gc-threshold"] == "0":
		gcThreshold = -1 // disabled
	case err != nil || gcThreshold <= fleet.DefaultOfflineAfter:
		errs = append(errs, fmt.Errorf("%s=%q: want 0 (never remove offline agents) or a duration longer than %s, like 24h or 90m", source["agent-gc-threshold"], val["agent-gc-threshold"], fleet.DefaultOfflineAfter))
	}
	stall, err := time.ParseDuration(val["download-stall-timeout"])
	if err != nil || stall <= 0 {
		errs = append(errs, fmt.Errorf("%s=%q is not a positive duration (like 30s or 2m)", source["download-stall-timeout"], val["download-stall-timeout"]))
	}
	rateSpec := func(name string) int64 {
		v, err := ratespec.Parse(val[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source[name], err))
		}
		return v
	}
	maxEgress, maxDownloadRate := rateSpec("max-egress"), rateSpec("max-download-rate")
	var advertise []string
	for _, n := range strings.Split(val["advertise"], ",") {
		if n = strings.TrimSpace(n); n != "" {
			advertise = append(advertise, n)
		}
	}
	certLifetime, err := time.ParseDuration(val["client-cert-lifetime"])
	if err != nil || certLifetime < time.Hour || certLifetime > 365*24*time.Hour {
		errs = append(errs, fmt.Errorf("%s=%q: want a duration from 1h to 8760h (one year), like 720h", source["client-cert-lifetime"], val["client-cert-lifetime"]))
	}
	rateOf := func(name string) ratelimit.Rate {
		r, err := ratelimit.Parse(val[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source[name], err))
		}
		return r
	}
	rateLimits := ratelimit.Config{Identity: rateOf("rate-limit-identity"), Address: rateOf("rate-limit-address"), Enroll: rateOf("rate-limit-enroll")}
	boolOf := func(name string) bool {
		b, err := strconv.ParseBool(val[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want true or false (1 or 0)", source[name], val[name]))
		}
		return b
	}
	httpTLS, privateDownloads := boolOf("http-tls"), boolOf("private-downloads")
	publicMetrics := boolOf("public-metrics")
	if privateDownloads && !httpTLS && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s needs --http-tls (or SUTRA_HTTP_TLS=1): over plain HTTP agents cannot present their certificates and could not download", source["private-downloads"]))
	}
	releaseKeys, err := parseReleaseKeys(val["release-public-keys"])
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", source["release-public-keys"], err))
	}
	storeOpts, err := storeSettings(val, source, grpcPort)
	if err != nil {
		errs = append(errs, err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(val["log-level"])); err != nil {
		errs = append(errs, fmt.Errorf("%s=%q: want debug, info, warn or error", source["log-level"], val["log-level"]))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	bind := val["bind"]
	hostPort := func(p int) string {
		if strings.Contains(bind, ":") {
			return fmt.Sprintf("[%s]:%d", bind, p)
		}
		return fmt.Sprintf("%s:%d", bind, p)
	}

	// The design document's start-up lines go to stdout (terminal or not, so
	// that scripts and service logs see them); structured logs go to stderr.
	console := stdout
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return master.Run(ctx, master.Options{
		HTTPAddr:                 hostPort(httpPort),
		GRPCAddr:                 hostPort(grpcPort),
		BinariesDir:              val["binaries-dir"],
		DataDir:                  val["data-dir"],
		MaxConcurrentDownloads:   maxDl,
		DownloadStallTimeout:     stall,
		MaxEgress:                maxEgress,
		MaxDownloadRate:          maxDownloadRate,
		GRPCMaxConcurrentStreams: uint32(grpcStreams),
		Logger:                   logger,
		Console:                  console,
		Advertise:                advertise,
		ClientCertLifetime:       certLifetime,
		RateLimits:               rateLimits,
		HTTPTLS:                  httpTLS,
		PrivateDownloads:         privateDownloads,
		PublicMetrics:            publicMetrics,
		ReleasePublicKeys:        releaseKeys,
		Store:                    storeOpts,
		ControlPlane: controlplane.Options{
			MaxAgents: maxAgents, MaxNodes: maxNodes, MaxWatchers: maxWatchers,
			AgentGCThreshold: gcThreshold,
		},
	})
}
