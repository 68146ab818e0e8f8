// Command fleet is the control plane's load generator: it simulates N agents
// over real gRPC on loopback (many agents share each connection), registers
// them with a few nodes each, heartbeats every interval, and reports heartbeat
// latency (p50/p99), the master's CPU and peak RSS, and how long all agents
// take to be accepted again after the master is killed (-9) and restarted.
//
// By default it runs the master itself as a child process (this binary
// re-executed with -serve: bbolt store + fleet + gRPC, the same parts
// sutra-master wires), so /proc gives the master's own CPU and RSS:
//
//	go run ./bench/fleet -n 1000
//	go run ./bench/fleet -n 10000 -duration 40s
//
// -master HOST:PORT targets a running master instead (no CPU/RSS/restart).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/grpcapi"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

type config struct {
	n        int
	conns    int
	nodes    int
	interval time.Duration
	duration time.Duration
	master   string
	restart  bool
	serve    string
	dataDir  string
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 1000, "simulated agents")
	flag.IntVar(&c.conns, "conns", 16, "gRPC connections shared by the agents")
	flag.IntVar(&c.nodes, "nodes", 3, "nodes each agent reports")
	flag.DurationVar(&c.interval, "interval", 5*time.Second, "heartbeat interval")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "steady-state measurement window")
	flag.StringVar(&c.master, "master", "", "address of a running master (default: start one as a child process)")
	flag.BoolVar(&c.restart, "restart", true, "kill -9 and restart the child master, and time the re-registration")
	flag.StringVar(&c.serve, "serve", "", "internal: run as the master on this address")
	flag.StringVar(&c.dataDir, "data", "", "internal: the master's data directory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if c.serve != "" {
		err = serve(ctx, c)
	} else {
		err = bench(ctx, c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/fleet:", err)
		os.Exit(1)
	}
}

// serve runs the control plane the way sutra-master wires it.
func serve(ctx context.Context, c config) error {
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
	// Server-side handler time, printed every 10 s, tells the master's own
	// latency apart from time spent queued for a CPU on a loaded machine.
	var hmu sync.Mutex
	var handled []time.Duration
	intercept := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		if info.FullMethod == gridv1.GridMaster_Heartbeat_FullMethodName {
			hmu.Lock()
			handled = append(handled, time.Since(start))
			hmu.Unlock()
		}
		return resp, err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
			hmu.Lock()
			d := handled
			handled = nil
			hmu.Unlock()
			if len(d) == 0 {
				continue
			}
			slices.Sort(d)
			fmt.Fprintf(os.Stderr, "  [master] heartbeat handler time over 10s: n=%d p50 %s p99 %s max %s\n",
				len(d), d[len(d)/2], d[min(len(d)-1, len(d)*99/100)], d[len(d)-1])
		}
	}()
	g := grpc.NewServer(grpc.UnaryInterceptor(intercept))
	grpcapi.New(f, log).Register(g)
	go func() { _ = f.Run(ctx) }()
	go func() { <-ctx.Done(); g.Stop() }()
	fmt.Println("READY", lis.Addr())
	return g.Serve(lis)
}

type child struct {
	cmd *exec.Cmd
}

func startChild(addr, dir string, interval time.Duration) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", addr, "-data", dir, "-interval", interval.String())
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
		return nil, fmt.Errorf("master child did not start: %q %v", buf[:n], err)
	}
	return &child{cmd: cmd}, nil
}

// cpu returns the child's user+system CPU time (Linux /proc).
func (c *child) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil // USER_HZ = 100
}

// peakRSS returns VmHWM in MiB.
func (c *child) peakRSS() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
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

type agent struct {
	id      string
	client  gridv1.GridMasterClient
	applied uint64
	nodes   []*gridv1.NodeStatus
	// okAfter is the unix-nano time of the first success after a restart mark.
	okAfter atomic.Int64
}

type stats struct {
	mu        sync.Mutex
	recording bool
	lat       []time.Duration
	errs      map[codes.Code]int
	mark      atomic.Int64 // restart mark (unix nano), 0: none
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

func (a *agent) register(ctx context.Context) error {
	resp, err := a.client.RegisterAgent(ctx, &gridv1.RegisterAgentRequest{
		AgentId: a.id, Hostname: a.id + ".bench", Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0",
		MaxStorageNodes: uint32(len(a.nodes) + 2), Nodes: a.nodes,
	})
	if err == nil {
		a.applied = resp.GetDesired().GetGeneration()
	}
	return err
}

func (a *agent) loop(ctx context.Context, interval time.Duration, s *stats) {
	// Jitter the first heartbeat across the whole interval, as real agents do.
	t := time.NewTimer(rand.N(interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := a.client.Heartbeat(rctx, &gridv1.HeartbeatRequest{AgentId: a.id, AppliedGeneration: a.applied, Nodes: a.nodes, AgentVersion: "0.1.0"})
		if status.Code(err) == codes.NotFound {
			err = a.register(rctx)
		} else if err == nil {
			a.applied = resp.GetDesired().GetGeneration()
		}
		cancel()
		d := time.Since(start)
		s.record(d, err)
		if err == nil {
			if m := s.mark.Load(); m != 0 && a.okAfter.Load() == 0 {
				a.okAfter.Store(time.Now().UnixNano())
			}
		}
		// Real agents retry on the next tick (with 10% jitter).
		t.Reset(interval + time.Duration(rand.Int64N(int64(interval/10)+1)) - interval/20)
	}
}

func bench(ctx context.Context, c config) error {
	var ch *child
	addr := c.master
	dir := ""
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		l.Close()
		dir, err = os.MkdirTemp("", "bench-fleet-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if ch, err = startChild(addr, filepath.Join(dir, "data"), c.interval); err != nil {
			return err
		}
		defer func() { _ = ch.cmd.Process.Kill(); _ = ch.cmd.Wait() }()
	}
	conns := make([]*grpc.ClientConn, c.conns)
	for i := range conns {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		conns[i] = conn
	}
	agents := make([]*agent, c.n)
	for i := range agents {
		a := &agent{id: fmt.Sprintf("bench-%06d", i), client: gridv1.NewGridMasterClient(conns[i%len(conns)])}
		for j := range c.nodes {
			a.nodes = append(a.nodes, &gridv1.NodeStatus{NodeId: fmt.Sprintf("%s-n%d", a.id, j), State: gridv1.NodeState_NODE_STATE_RUNNING,
				Pid: int64(10000 + j), Endpoint: fmt.Sprintf("10.0.0.1:%d", 7100+j), Version: "1.0.0", SinceUnix: time.Now().Unix()})
		}
		agents[i] = a
	}
	fmt.Printf("bench/fleet: %d agents, %d nodes each, %d connections, heartbeat every %s, master %s\n", c.n, c.nodes, c.conns, c.interval, addr)

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
		return fmt.Errorf("register: %w", err)
	}
	fmt.Printf("registered %d agents in %s (%.0f/s)\n", c.n, time.Since(start).Round(time.Millisecond), float64(c.n)/time.Since(start).Seconds())

	s := &stats{errs: map[codes.Code]int{}}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, a := range agents {
		go a.loop(actx, c.interval, s)
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
	t0 := time.Now()
	sleep(ctx, c.duration)
	wall := time.Since(t0)
	s.mu.Lock()
	s.recording = false
	lat := slices.Clone(s.lat)
	errs := s.errs
	s.mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("heartbeats: %d in %s (%.0f/s), errors %v\n", len(lat), wall.Round(time.Millisecond), float64(len(lat))/wall.Seconds(), errs)
	fmt.Printf("heartbeat latency: p50 %s  p99 %s  max %s\n", pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
	if ch == nil {
		return nil
	}
	cpu1, err := ch.cpu()
	if err == nil {
		fmt.Printf("master CPU: %.1f%% of one core (%s over %s)\n", 100*float64(cpu1-cpu0)/float64(wall), cpu1-cpu0, wall.Round(time.Millisecond))
	}
	if rss, err := ch.peakRSS(); err == nil {
		fmt.Printf("master peak RSS: %.1f MiB\n", rss)
	}
	if !c.restart {
		return nil
	}

	// kill -9 the master and start it again on the same data and port.
	fmt.Println("killing the master (-9) and restarting it...")
	s.mark.Store(time.Now().UnixNano())
	kill := time.Now()
	_ = ch.cmd.Process.Kill()
	_ = ch.cmd.Wait()
	ch, err = startChild(addr, filepath.Join(dir, "data"), c.interval)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	ready := time.Now()
	fmt.Printf("master back up (loaded %d agents) %s after the kill\n", c.n, ready.Sub(kill).Round(time.Millisecond))
	deadline := time.Now().Add(4*c.interval + time.Minute)
	for {
		done, last := 0, int64(0)
		for _, a := range agents {
			if v := a.okAfter.Load(); v != 0 {
				done++
				last = max(last, v)
			}
		}
		if done == len(agents) {
			fmt.Printf("all %d agents accepted again %s after the kill (%s after the master was up; agents retry on their %s tick)\n",
				done, time.Unix(0, last).Sub(kill).Round(time.Millisecond), time.Unix(0, last).Sub(ready).Round(time.Millisecond), c.interval)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("only %d of %d agents came back", done, len(agents))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rss, err := ch.peakRSS(); err == nil {
		fmt.Printf("restarted master peak RSS: %.1f MiB\n", rss)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
