// Command fleet is the control plane's load generator: it simulates N agents
// over real gRPC on loopback, registers them with a few nodes each,
// heartbeats every interval, and reports heartbeat latency (p50/p99), the
// master's CPU and peak RSS, and how long all agents take to be accepted
// again after the master is killed (-9) and restarted.
//
// By default it runs the master itself as a child process (this binary
// re-executed with -serve), so /proc gives the master's own CPU and RSS,
// over mutual TLS as a real fleet does: the child is the real master
// (master.Run: the CA and server certificate of master/pki in its data
// dir, the auth and rate-limit interceptors, the control plane; only the
// binaries dir is empty and HTTP on a free port). Every simulated agent
// has its own identity, a client certificate naming its agent id issued in
// a setup step directly from the child's CA (master/pki IssueClient on the
// data dir before the child starts: the same certificate Enroll would
// issue, without 10,000 join-token round trips), and so its own TLS
// connection with its own session cache; after the kill -9 the bench
// reports how many reconnects resumed their TLS session (the master keeps
// its ticket keys in {data_dir}/tls/ticket.keys).
//
// -plaintext is the old baseline: a bare gRPC server (bbolt store + fleet
// + GridMaster service, no TLS, no auth, no rate limits) with the agents
// sharing -conns connections. -compare runs both back to back and prints
// them side by side.
//
//	go run ./bench/fleet -n 1000
//	go run ./bench/fleet -n 2000 -compare
//	go run ./bench/fleet -n 10000 -duration 40s
//
// 10,000 agents over mTLS are 10,000 connections: the bench raises its
// RLIMIT_NOFILE to the hard limit (check ulimit -Hn). The master's default
// rate limits fit 10,000 agents behind one address (all of them come from
// 127.0.0.1 here); -rate-limit off passes --rate-limit-*=off to the child.
//
// -rollout (rollout.go) rolls a new storage-server version across the
// simulated fleet after the steady window:
//
//	go run ./bench/fleet -n 10000 -rollout -restart=false -duration 15s
//
// -masters 3 -etcd (ha.go) runs the single master on bbolt, then three
// masters on a three-member etcd (etcdmember processes), and prints both
// side by side, with etcd's write rate and the time until every agent is
// back after the leading master's kill -9:
//
//	go run ./bench/fleet -n 2000 -masters 3 -etcd -duration 20s
//
// -master HOST:PORT targets a running plaintext master instead (no
// CPU/RSS/restart).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/controlplane"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/ratelimit"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

type config struct {
	n         int
	conns     int
	nodes     int
	interval  time.Duration
	duration  time.Duration
	master    string
	restart   bool
	plaintext bool
	compare   bool
	rateLimit string
	metrics   string
	resume    bool
	// rollout: after the steady window, roll a new storage-server version
	// across the fleet (see rollout.go).
	rollout      bool
	soak         time.Duration
	upgradeDelay time.Duration
	serve        string
	dataDir      string
	out          io.Writer
	// -masters N -etcd (ha.go): N masters on a 3-member etcd beside the
	// single master on bbolt.
	masters    int
	etcd       bool
	etcdMember string
	// Internal, for an HA child master: the etcd store and its name.
	etcdEndpoints string
	masterID      string
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 1000, "simulated agents")
	flag.IntVar(&c.conns, "conns", 16, "-plaintext: gRPC connections shared by the agents (over mTLS each agent has its own)")
	flag.IntVar(&c.nodes, "nodes", 3, "nodes each agent reports")
	flag.DurationVar(&c.interval, "interval", 5*time.Second, "heartbeat interval")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "steady-state measurement window")
	flag.StringVar(&c.master, "master", "", "address of a running plaintext master (default: start one as a child process)")
	flag.BoolVar(&c.restart, "restart", true, "kill -9 and restart the child master, and time the re-registration")
	flag.BoolVar(&c.plaintext, "plaintext", false, "the old baseline: a bare plaintext gRPC master, agents sharing -conns connections (default: the real master over mTLS, one connection and certificate per agent)")
	flag.BoolVar(&c.compare, "compare", false, "run -plaintext and mTLS back to back and print a table")
	flag.BoolVar(&c.resume, "resume", true, "mTLS: agents keep a TLS session cache (-resume=false: every reconnect is a full handshake, to measure what resumption saves)")
	flag.StringVar(&c.rateLimit, "rate-limit", "on", "mTLS: \"on\" keeps the master's default rate limits, \"off\" disables them in the child")
	flag.StringVar(&c.metrics, "metrics", "on", "mTLS: \"on\" keeps the master's Prometheus metrics (interceptors, middleware, store timing), \"off\" turns them off in the child, to measure their overhead")
	flag.BoolVar(&c.rollout, "rollout", false, "mTLS: after the steady window, publish a new storage-server version and roll it out to every agent with waves 1,10,50,100 (the simulated agents upgrade); report its completion time, master CPU/RSS and heartbeat p99 during it")
	flag.DurationVar(&c.soak, "soak", 2*time.Second, "-rollout: the rollout's soak time")
	flag.DurationVar(&c.upgradeDelay, "upgrade-delay", 200*time.Millisecond, "-rollout: how long a simulated agent takes to \"upgrade\" its nodes after its desired version changes (it then heartbeats at once)")
	flag.IntVar(&c.masters, "masters", 1, "with -etcd: this many masters (2 to 5) on a 3-member etcd, after the single-master bbolt run (ha.go)")
	flag.BoolVar(&c.etcd, "etcd", false, "run the masters on etcd (3 etcdmember processes); needs -masters 2 or more; prints both runs side by side")
	flag.StringVar(&c.etcdMember, "etcdmember", "", "-etcd: a built internal/etcdtest/etcdmember (default: go build it)")
	flag.StringVar(&c.etcdEndpoints, "etcd-endpoints", "", "internal: the child master's etcd endpoints")
	flag.StringVar(&c.masterID, "master-id", "", "internal: the child master's id")
	flag.StringVar(&c.serve, "serve", "", "internal: run as the master on this address")
	flag.StringVar(&c.dataDir, "data", "", "internal: the master's data directory")
	flag.Parse()
	c.out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch {
	case c.rateLimit != "on" && c.rateLimit != "off":
		err = fmt.Errorf("-rate-limit %q: want on or off", c.rateLimit)
	case c.metrics != "on" && c.metrics != "off":
		err = fmt.Errorf("-metrics %q: want on or off", c.metrics)
	case c.rollout && (c.plaintext || c.compare || c.master != ""):
		err = errors.New("-rollout needs the real master over mTLS (not -plaintext, -compare or -master)")
	case c.serve == "" && (c.etcd || c.masters != 1) && (!c.etcd || c.masters < 2 || c.masters > 5):
		err = errors.New("-masters N (2 to 5) and -etcd go together")
	case c.serve == "" && c.etcd && (c.plaintext || c.compare || c.rollout || c.master != ""):
		err = errors.New("-etcd runs the real masters over mTLS (not -plaintext, -compare, -rollout or -master)")
	case c.serve == "" && c.etcd:
		loadGeneratorGC()
		err = runHA(ctx, c)
	case c.serve != "" && c.plaintext:
		err = servePlain(ctx, c)
	case c.serve != "":
		err = serveTLS(ctx, c)
	case c.compare:
		loadGeneratorGC()
		err = compare(ctx, c)
	default:
		loadGeneratorGC()
		_, err = bench(ctx, c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/fleet:", err)
		os.Exit(1)
	}
}

// loadGeneratorGC makes the load generator (10,000 simulated agents are
// 10,000 gRPC client connections, a heap of several hundred MB) collect
// less often, so that its own GC work on a 2-core machine adds less to the
// latencies it measures. The child master keeps Go's defaults.
func loadGeneratorGC() { debug.SetGCPercent(400) }

// compare runs the plaintext baseline, then mTLS, and prints both.
func compare(ctx context.Context, c config) error {
	c.plaintext = true
	plain, err := bench(ctx, c)
	if err != nil {
		return fmt.Errorf("plaintext: %w", err)
	}
	fmt.Fprintln(c.out)
	c.plaintext = false
	mtls, err := bench(ctx, c)
	if err != nil {
		return fmt.Errorf("mTLS: %w", err)
	}
	fmt.Fprintf(c.out, "\n%d agents, %d nodes each, heartbeat every %s (shared machine: figures are noisy)\n", c.n, c.nodes, c.interval)
	fmt.Fprintf(c.out, "%-34s %14s %14s\n", "", "plaintext", "mTLS")
	row := func(name string, f func(*result) string) {
		fmt.Fprintf(c.out, "%-34s %14s %14s\n", name, f(plain), f(mtls))
	}
	row("connections", func(r *result) string { return strconv.Itoa(r.conns) })
	row("registration (all agents)", func(r *result) string { return r.register.Round(time.Millisecond).String() })
	row("heartbeat p50", func(r *result) string { return r.p50.Round(10 * time.Microsecond).String() })
	row("heartbeat p99", func(r *result) string { return r.p99.Round(10 * time.Microsecond).String() })
	row("heartbeat errors", func(r *result) string { return strconv.Itoa(r.errors) })
	row("master CPU (% of one core)", func(r *result) string { return fmt.Sprintf("%.1f%%", r.cpu) })
	row("master peak RSS", func(r *result) string { return fmt.Sprintf("%.1f MiB", r.rss) })
	row("load generator CPU", func(r *result) string { return fmt.Sprintf("%.1f%%", r.selfCPU) })
	if c.restart {
		row("all accepted again after kill -9", func(r *result) string { return r.back.Round(time.Millisecond).String() })
		row("restarted master peak RSS", func(r *result) string { return fmt.Sprintf("%.1f MiB", r.rss2) })
		row("restarted master CPU until all back", func(r *result) string { return r.reconnectCPU.String() })
		row("reconnects resumed (TLS)", func(r *result) string {
			if r.plaintext {
				return "-"
			}
			return fmt.Sprintf("%d/%d", r.resumed, r.reconnected)
		})
	}
	return nil
}

// servePlain is the baseline: the control plane on a bare plaintext gRPC
// server (store + fleet + GridMaster, no TLS, auth or rate limits).
func servePlain(ctx context.Context, c config) error {
	st, err := store.OpenDir(c.dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := fleet.New(ctx, fleet.Options{Store: st, Logger: log, HeartbeatInterval: c.interval})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", c.serve)
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	grpcapi.New(f, log).Register(g)
	go func() { _ = f.Run(ctx) }()
	go func() { <-ctx.Done(); g.Stop() }()
	fmt.Println("READY", lis.Addr())
	return g.Serve(lis)
}

// serveTLS runs the real master (master.Run, as sutra-master does) on
// the data dir: TLS-only gRPC on c.serve, HTTP on a free loopback port.
func serveTLS(ctx context.Context, c config) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	bins := c.dataDir + "-binaries"
	if err := os.MkdirAll(bins, 0o755); err != nil {
		return err
	}
	opts := master.Options{
		GRPCAddr: c.serve, HTTPAddr: "127.0.0.1:0", BinariesDir: bins, DataDir: c.dataDir, Logger: log,
		ControlPlane: controlplane.Options{HeartbeatInterval: c.interval},
		Ready:        func(a master.Addrs) { fmt.Println("READY", a.GRPC, a.HTTP) },
		NoMetrics:    c.metrics == "off",
	}
	if c.etcdEndpoints != "" {
		opts.Store = master.StoreOptions{Backend: master.StoreEtcd, EtcdEndpoints: strings.Split(c.etcdEndpoints, ","), MasterID: c.masterID}
	}
	if c.rateLimit == "off" {
		off := ratelimit.Rate{Off: true}
		opts.RateLimits = ratelimit.Config{Identity: off, Address: off, Enroll: off}
	}
	return master.Run(ctx, opts)
}

type child struct {
	cmd *exec.Cmd
}

func startChild(c config, addr, dir string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-serve", addr, "-data", dir, "-interval", c.interval.String(), "-rate-limit", c.rateLimit, "-metrics", c.metrics}
	if c.plaintext {
		args = append(args, "-plaintext")
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	buf := make([]byte, 128)
	n, err := out.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("master child did not start: %q %v", buf[:n], err)
	}
	return &child{cmd: cmd}, nil
}

// cpu returns the child's user+system CPU time (Linux /proc).
func (c *child) cpu() (time.Duration, error) { return procCPU(strconv.Itoa(c.cmd.Process.Pid)) }

// peakRSS returns the child's VmHWM in MiB.
func (c *child) peakRSS() (float64, error) { return procPeakRSS(strconv.Itoa(c.cmd.Process.Pid)) }

// procCPU returns the user+system CPU time of /proc/<pid> ("self": this process).
func procCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil // USER_HZ = 100
}

// procPeakRSS returns VmHWM of /proc/<pid> in MiB.
func procPeakRSS(pid string) (float64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM")
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

type agent struct {
	id      string
	client  gridv1.GridMasterClient
	applied uint64
	nodes   []*gridv1.NodeStatus
	// okAfter is the unix-nano time of the first success after a restart mark.
	okAfter atomic.Int64
	// resumed: that first success went over a resumed TLS session.
	resumed atomic.Bool
	// The simulated upgrade (-rollout): seen is the last desired
	// storage-server version; pending the exact version its nodes switch
	// to at pendingAt; upgraded counts the switches (read by the bench).
	delay     time.Duration
	seen      string
	pending   string
	pendingAt time.Time
	upgraded  atomic.Int64
	// onGone, when set (-etcd), moves the agent to another master after a
	// call its master did not answer (Unavailable, DeadlineExceeded).
	onGone func()
}

// observe notes the desired state of a registration or heartbeat
// response and reports whether the agent should report again soon: a new
// exact storage-server version makes it "upgrade" its nodes after delay.
func (a *agent) observe(d *gridv1.DesiredState) bool {
	a.applied = d.GetGeneration()
	v := d.GetStorageServerVersion()
	if v == a.seen {
		return false
	}
	a.seen = v
	if v == "" || v == "latest" || (len(a.nodes) > 0 && a.nodes[0].Version == v) {
		return false
	}
	a.pending, a.pendingAt = v, time.Now().Add(a.delay)
	return true
}

// upgrade switches the nodes to the pending version once it is due: they
// run it and are healthy from then on.
func (a *agent) upgrade() {
	if a.pending == "" || time.Now().Before(a.pendingAt) {
		return
	}
	for _, n := range a.nodes {
		n.Version, n.SinceUnix, n.Pid = a.pending, time.Now().Unix(), n.Pid+1
	}
	a.pending = ""
	a.upgraded.Add(1)
}

type stats struct {
	mu        sync.Mutex
	recording bool
	lat       []time.Duration
	errs      map[codes.Code]int
	mark      atomic.Int64 // restart mark (unix nano), 0: none
}

// window is the heartbeat figures of one measurement window.
type window struct {
	heartbeats, errors int
	p50, p99, max      time.Duration
}

// endWindow stops recording, prints the window's heartbeat rate, errors
// and latency percentiles, and returns them; the error counts start
// again from zero.
func (s *stats) endWindow(out io.Writer, wall time.Duration) window {
	s.mu.Lock()
	s.recording = false
	lat := slices.Clone(s.lat)
	errs := s.errs
	s.errs = map[codes.Code]int{}
	s.mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	w := window{heartbeats: len(lat), p50: pct(0.50), p99: pct(0.99), max: pct(1)}
	for _, n := range errs {
		w.errors += n
	}
	fmt.Fprintf(out, "heartbeats: %d in %s (%.0f/s), errors %v\n", len(lat), wall.Round(time.Millisecond), float64(len(lat))/wall.Seconds(), errs)
	fmt.Fprintf(out, "heartbeat latency: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", w.p50.Round(10*time.Microsecond), pct(0.90).Round(10*time.Microsecond),
		w.p99.Round(10*time.Microsecond), pct(0.999).Round(10*time.Microsecond), w.max.Round(10*time.Microsecond))
	return w
}

func (s *stats) record(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.recording {
		return
	}
	if err != nil {
		s.errs[status.Code(err)]++
		return
	}
	s.lat = append(s.lat, d)
}

func (a *agent) register(ctx context.Context, opts ...grpc.CallOption) error {
	resp, err := a.client.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{
		AgentId: a.id, Hostname: a.id + ".bench", Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0",
		MaxStorageNodes: uint32(len(a.nodes) + 2), Nodes: a.nodes,
	}, opts...)
	if err == nil {
		a.observe(resp.GetDesired())
	}
	return err
}

func (a *agent) loop(ctx context.Context, interval time.Duration, s *stats) {
	// Jitter the first heartbeat across the whole interval, as real agents do.
	t := time.NewTimer(mrand.N(interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.upgrade()
		soon := false
		var p peer.Peer
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := a.client.Heartbeat(rctx, &gridv1.HeartbeatRequest{AgentId: a.id, AppliedGeneration: a.applied, Nodes: a.nodes, AgentVersion: "0.1.0"}, grpc.Peer(&p))
		if status.Code(err) == codes.NotFound {
			err = a.register(rctx, grpc.Peer(&p))
			soon = a.pending != ""
		} else if err == nil {
			soon = a.observe(resp.GetDesired())
		}
		cancel()
		d := time.Since(start)
		s.record(d, err)
		if err == nil {
			// Only calls begun after the kill count: one in flight before
			// it may have succeeded on the old master.
			if m := s.mark.Load(); m != 0 && start.UnixNano() > m && a.okAfter.Load() == 0 {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && ti.State.DidResume {
					a.resumed.Store(true)
				}
				a.okAfter.Store(time.Now().UnixNano())
			}
		}
		// Real agents retry on the next tick (with 10% jitter); one that
		// was told to upgrade reports its nodes once it did; one whose
		// master is gone moves to another and retries within a second.
		if err != nil && a.onGone != nil && gone(err) {
			a.onGone()
			t.Reset(mrand.N(time.Second))
		} else if soon {
			t.Reset(a.delay)
		} else {
			t.Reset(interval + time.Duration(mrand.Int64N(int64(interval/10)+1)) - interval/20)
		}
	}
}

// result is one run's figures.
type result struct {
	plaintext          bool
	conns              int
	register           time.Duration
	heartbeats, errors int
	p50, p99, max      time.Duration
	cpu, rss, rss2     float64
	selfCPU, selfRSS   float64
	// reconnectCPU is the restarted master's CPU time until every agent was back.
	reconnectCPU         time.Duration
	back, backAfterUp    time.Duration
	resumed, reconnected int
	ro                   *rolloutResult
}

// identities issues a client certificate for every agent from the CA in
// dir (made there if new; the child master then loads it), in parallel.
func identities(dir string, agents []*agent) (*pki.PKI, []*tls.Certificate, error) {
	ca, err := pki.Open(pki.Options{Dir: dir})
	if err != nil {
		return nil, nil, err
	}
	certs := make([]*tls.Certificate, len(agents))
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, runtime.GOMAXPROCS(0))
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(agents) {
					return
				}
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err == nil {
					var csr, der []byte
					csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: agents[i].id}}, key)
					if err == nil {
						der, err = ca.IssueClient(csr, agents[i].id, 0)
					}
					if err == nil {
						var leaf *x509.Certificate
						leaf, err = x509.ParseCertificate(der)
						certs[i] = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
					}
				}
				if err != nil {
					errc <- fmt.Errorf("identity of %s: %w", agents[i].id, err)
					next.Store(int64(len(agents)))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return nil, nil, err
	}
	return ca, certs, nil
}

// raiseNoFile lifts RLIMIT_NOFILE to the hard limit (the mTLS bench holds
// one connection per agent, and the child master as many).
func raiseNoFile(need int) error {
	cur, max, err := noFile()
	if err != nil || cur >= uint64(need) {
		return err
	}
	if max < uint64(need) {
		return fmt.Errorf("%d agents need about %d open files, the hard limit (ulimit -Hn) is %d", need-100, need, max)
	}
	return setNoFile(max)
}

func bench(ctx context.Context, c config) (*result, error) {
	out := c.out
	r := &result{plaintext: c.plaintext}
	var ch *child
	addr := c.master
	dir := ""
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addr = l.Addr().String()
		l.Close()
		dir, err = os.MkdirTemp("", "bench-fleet-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	} else {
		c.plaintext = true
		r.plaintext = true
	}
	if !c.plaintext {
		if err := raiseNoFile(c.n + 200); err != nil {
			return nil, err
		}
	}
	agents := make([]*agent, c.n)
	for i := range agents {
		a := &agent{id: fmt.Sprintf("bench-%06d", i), delay: c.upgradeDelay}
		for j := range c.nodes {
			a.nodes = append(a.nodes, &gridv1.NodeStatus{NodeId: fmt.Sprintf("%s-n%d", a.id, j), State: gridv1.NodeState_NODE_STATE_RUNNING,
				Pid: int64(10000 + j), Endpoint: fmt.Sprintf("10.0.0.1:%d", 7100+j), Version: "1.0.0", SinceUnix: time.Now().Unix()})
		}
		agents[i] = a
	}
	// Small buffers: thousands of connections in one process.
	dialOpts := []grpc.DialOption{grpc.WithReadBufferSize(8 << 10), grpc.WithWriteBufferSize(8 << 10), grpc.WithSharedWriteBuffer(true)}
	if c.plaintext {
		r.conns = c.conns
		conns := make([]*grpc.ClientConn, c.conns)
		for i := range conns {
			conn, err := grpc.NewClient(addr, append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			conns[i] = conn
		}
		for i, a := range agents {
			a.client = gridv1.NewGridMasterClient(conns[i%len(conns)])
		}
	} else {
		r.conns = c.n
		t := time.Now()
		ca, certs, err := identities(filepath.Join(dir, "data", "tls"), agents)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "issued %d agent certificates from the master's CA in %s\n", c.n, time.Since(t).Round(time.Millisecond))
		for i, a := range agents {
			// Each agent: its own certificate, TLS config and session cache.
			cfg := pki.ClientTLSConfig(ca.Roots(), certs[i])
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			if !c.resume {
				cfg.ClientSessionCache = nil
			}
			conn, err := grpc.NewClient(addr, append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			a.client = gridv1.NewGridMasterClient(conn)
		}
	}
	if dir != "" {
		var err error
		if ch, err = startChild(c, addr, filepath.Join(dir, "data")); err != nil {
			return nil, err
		}
		defer func() { ch.kill() }()
	}
	mode := "mTLS, one connection per agent"
	if c.plaintext {
		mode = fmt.Sprintf("plaintext, %d shared connections", c.conns)
	}
	fmt.Fprintf(out, "bench/fleet: %d agents, %d nodes each, %s, heartbeat every %s, master %s\n", c.n, c.nodes, mode, c.interval, addr)

	// Register everyone (bounded concurrency).
	start := time.Now()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var regErr atomic.Value
	for _, a := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := a.register(rctx); err != nil {
				regErr.Store(err)
			}
		}()
	}
	wg.Wait()
	if err, _ := regErr.Load().(error); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	r.register = time.Since(start)
	fmt.Fprintf(out, "registered %d agents in %s (%.0f/s)\n", c.n, r.register.Round(time.Millisecond), float64(c.n)/r.register.Seconds())

	s := &stats{errs: map[codes.Code]int{}}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var loops sync.WaitGroup
	defer loops.Wait()
	defer cancel()
	for _, a := range agents {
		loops.Go(func() { a.loop(actx, c.interval, s) })
	}
	// Warm up one interval so every agent is in its rhythm, then measure.
	sleep(ctx, c.interval)
	s.mu.Lock()
	s.recording = true
	s.mu.Unlock()
	var cpu0 time.Duration
	if ch != nil {
		cpu0, _ = ch.cpu()
	}
	self0, _ := procCPU("self")
	t0 := time.Now()
	sleep(ctx, c.duration)
	wall := time.Since(t0)
	self1, _ := procCPU("self")
	w := s.endWindow(out, wall)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.heartbeats, r.p50, r.p99, r.max, r.errors = w.heartbeats, w.p50, w.p99, w.max, w.errors
	// The simulated agents share the machine with the master: their own
	// cost, to tell the master's latency apart from the load generator's.
	if rss, err := procPeakRSS("self"); err == nil && self1 > 0 {
		r.selfCPU, r.selfRSS = 100*float64(self1-self0)/float64(wall), rss
		fmt.Fprintf(out, "load generator (the %d agents): %.1f%% of one core, peak RSS %.1f MiB\n", c.n, r.selfCPU, rss)
	}
	if ch == nil {
		return r, nil
	}
	cpu1, err := ch.cpu()
	if err == nil {
		r.cpu = 100 * float64(cpu1-cpu0) / float64(wall)
		fmt.Fprintf(out, "master CPU: %.1f%% of one core (%s over %s)\n", r.cpu, cpu1-cpu0, wall.Round(time.Millisecond))
	}
	if r.rss, err = ch.peakRSS(); err == nil {
		fmt.Fprintf(out, "master peak RSS: %.1f MiB\n", r.rss)
	}
	if c.rollout {
		if r.ro, err = runRollout(ctx, c, ch, addr, filepath.Join(dir, "data"), agents, s); err != nil {
			return nil, fmt.Errorf("rollout: %w", err)
		}
		printRollout(c, r)
	}
	if !c.restart {
		return r, nil
	}

	// kill -9 the master and start it again on the same data and port.
	fmt.Fprintln(out, "killing the master (-9) and restarting it...")
	kill := time.Now()
	ch.kill()
	s.mark.Store(time.Now().UnixNano())
	ch, err = startChild(c, addr, filepath.Join(dir, "data"))
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	ready := time.Now()
	fmt.Fprintf(out, "master back up (loaded %d agents) %s after the kill\n", c.n, ready.Sub(kill).Round(time.Millisecond))
	deadline := time.Now().Add(4*c.interval + time.Minute)
	for {
		done, last, resumed := 0, int64(0), 0
		for _, a := range agents {
			if v := a.okAfter.Load(); v != 0 {
				done++
				last = max(last, v)
				if a.resumed.Load() {
					resumed++
				}
			}
		}
		if done == len(agents) {
			r.back, r.backAfterUp = time.Unix(0, last).Sub(kill), time.Unix(0, last).Sub(ready)
			r.resumed, r.reconnected = resumed, done
			if cpu, err := ch.cpu(); err == nil {
				r.reconnectCPU = cpu
				fmt.Fprintf(out, "restarted master's CPU until all were back: %s (loading the fleet and %d reconnects)\n", cpu, done)
			}
			fmt.Fprintf(out, "all %d agents accepted again %s after the kill (%s after the master was up; agents retry on their %s tick)\n",
				done, r.back.Round(time.Millisecond), r.backAfterUp.Round(time.Millisecond), c.interval)
			if !c.plaintext {
				fmt.Fprintf(out, "reconnects that resumed their TLS session: %d of %d\n", resumed, done)
			}
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("only %d of %d agents came back", done, len(agents))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.rss2, err = ch.peakRSS(); err == nil {
		fmt.Fprintf(out, "restarted master peak RSS: %.1f MiB\n", r.rss2)
	}
	return r, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
