// Command agentbench measures the agent against issue 5's performance goals
// with the real binaries on loopback:
//
//  1. Startup: time from `sutra-agent run` to the first storage node answering
//     /healthz, with a 20 MB storage-server (the real one, padded with zero
//     bytes — ELF ignores trailing data), cold (empty cache: download + verify
//     + cache + start) and warm (cached binary re-hashed before the start).
//     The baseline is the floor: exec'ing the same binary directly and
//     polling its /healthz. Goal: < 1 s.
//  2. Idle: the agent's RSS (VmRSS sampled each second, VmHWM) and CPU
//     (utime+stime from /proc) while it supervises 8 idle nodes with the
//     default monitoring settings. Goals: <= 25 MB, < 1 % of a core.
//
// The master has been told about the agent's node before each startup run
// (the agent registered once and its node was spawned with a fixed port), so
// a run is: register, receive the desired node, fetch or re-verify the
// binary, start the node, node healthy.
//
//	go run ./bench/agentbench                 # builds the binaries into a temp dir
//	go run ./bench/agentbench -runs 10 -idle 60s
//
// Linux only for the /proc figures (elsewhere they print as n/a).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

type options struct {
	runs     int
	idle     time.Duration
	nodes    int
	sizeMB   int
	keep     bool
	agentEnv string
	workDir  string
	clockTck float64
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 5, "startup runs per case (cold, warm, baseline)")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "how long to measure the agent supervising idle nodes")
	flag.IntVar(&o.nodes, "nodes", 8, "idle nodes to supervise")
	flag.IntVar(&o.sizeMB, "size-mb", 20, "storage-server size after padding, in MB")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs) after the run")
	flag.StringVar(&o.agentEnv, "agent-env", "", "extra environment for the idle agent, comma-separated KEY=VALUE (e.g. GOGC=50)")
	flag.Parse()
	o.clockTck = 100 // USER_HZ on Linux

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

type bench struct {
	joinToken           string // enrolls the bench's agents
	o                   options
	dir, binDir         string
	binariesDir, server string
	grpcPort, httpPort  int
	rpc                 gridv1.GridMasterClient
	children            []*exec.Cmd
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "sutra-agentbench-")
	if err != nil {
		return err
	}
	b := &bench{o: o, dir: dir, binDir: filepath.Join(dir, "bin"), binariesDir: filepath.Join(dir, "binaries")}
	defer func() {
		b.stopChildren()
		if o.keep {
			fmt.Println("work dir kept:", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	fmt.Println("building sutra-master, sutra-agent, storage-server 1.0.0 ...")
	if err := b.build(ctx); err != nil {
		return err
	}
	if err := b.startMaster(ctx); err != nil {
		return err
	}

	baseline, err := b.baseline(ctx)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	cold, warm, err := b.startup(ctx)
	if err != nil {
		return fmt.Errorf("startup: %w", err)
	}
	fmt.Println()
	fmt.Printf("Startup to first healthy node, %d MB storage-server, %d runs (goal < 1 s)\n", o.sizeMB, o.runs)
	fmt.Printf("  %-44s %s\n", "baseline: exec storage-server directly", summary(baseline))
	fmt.Printf("  %-44s %s\n", "sutra-agent run, cold cache (download+verify)", summary(cold))
	fmt.Printf("  %-44s %s\n", "sutra-agent run, warm cache (re-hash)", summary(warm))

	idle, err := b.idleUsage(ctx)
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	fmt.Println()
	fmt.Printf("Agent supervising %d idle nodes for %s (default monitoring: health checks every 5 s, heartbeats every 5 s)\n", o.nodes, o.idle)
	fmt.Printf("  %-44s %s\n", "RSS (VmRSS avg / max, VmHWM) (goal <= 25 MB)", idle.rss)
	fmt.Printf("  %-44s %s\n", "CPU (utime+stime / wall) (goal < 1 %)", idle.cpu)
	return nil
}

func (b *bench) build(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	goBuild := func(version, out string, pkgs ...string) error {
		args := append([]string{"build", "-trimpath", "-ldflags", "-s -w -X github.com/sutragrid/sutra/internal/version.Version=" + version, "-o", out}, pkgs...)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %w\n%s", err, b)
		}
		return nil
	}
	if err := goBuild("0.9.0", b.binDir+string(filepath.Separator), "./cmd/sutra-master", "./cmd/sutra-agent"); err != nil {
		return err
	}
	b.server = filepath.Join(b.binDir, "storage-server")
	if err := goBuild("1.0.0", b.server, "./cmd/storage-server"); err != nil {
		return err
	}
	// Pad to the benchmark's size with zero bytes (still runs: ELF ignores them).
	f, err := os.OpenFile(b.server, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(b.o.sizeMB) << 20); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	plat, arch, err := platform.Current()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.binariesDir, 0o755); err != nil {
		return err
	}
	data, err := os.ReadFile(b.server)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.binariesDir, fmt.Sprintf("storage-server-1.0.0-%s-%s%s", plat, arch, platform.ExeSuffix(plat))), data, 0o755)
}

func (b *bench) start(name string, path string, args, env []string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(b.dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b.children = append(b.children, cmd)
	return cmd, nil
}

// stop sends SIGTERM (the agent stops its nodes gracefully) and waits.
func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (b *bench) stopChildren() {
	for i := len(b.children) - 1; i >= 0; i-- {
		stop(b.children[i])
	}
}

func (b *bench) startMaster(ctx context.Context) error {
	var err error
	if b.grpcPort, err = freePort(); err != nil {
		return err
	}
	if b.httpPort, err = freePort(); err != nil {
		return err
	}
	if _, err := b.start("master", filepath.Join(b.binDir, "sutra-master"), nil, []string{
		"BINARIES_DIR=" + b.binariesDir, "SUTRA_DATA_DIR=" + filepath.Join(b.dir, "master"),
		"GRPC_PORT=" + strconv.Itoa(b.grpcPort), "HTTP_PORT=" + strconv.Itoa(b.httpPort), "BIND_ADDRESS=127.0.0.1",
	}); err != nil {
		return err
	}
	plat, arch, err := platform.Current()
	if err != nil {
		return err
	}
	// Up, and the padded storage-server hashed and published.
	if err := poll(ctx, 60*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/binaries/latest/%s/%s", b.httpPort, plat, arch))
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	}); err != nil {
		return fmt.Errorf("master did not come up and publish storage-server: %w", err)
	}
	// The operator's credentials the master wrote at start, and one join
	// token that enrolls the bench's agents.
	creds, err := opauth.Load(filepath.Join(b.dir, "master"))
	if err != nil {
		return err
	}
	conn, err := creds.Dial(fmt.Sprintf("127.0.0.1:%d", b.grpcPort))
	if err != nil {
		return err
	}
	b.rpc = gridv1.NewGridMasterClient(conn)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	jt, err := b.rpc.CreateJoinToken(tctx, &gridv1.CreateJoinTokenRequest{Uses: 100, TtlSecs: 24 * 3600})
	if err != nil {
		return fmt.Errorf("create a join token: %w", err)
	}
	b.joinToken = jt.GetToken()
	return nil
}

// agentConfig writes an agent config under dir/id and returns its path.
func (b *bench) agentConfig(id string, portStart, maxNodes int) (string, error) {
	home := filepath.Join(b.dir, id)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`version = 1
[agent]
agent_id = %q
master_host = "127.0.0.1:%d"
join_token = %q
cache_dir = %q
agent_data_dir = %q
max_storage_nodes = %d
[storage]
master_binary_url = "http://127.0.0.1:%d"
data_path = %q
port_range_start = %d
`, id, b.grpcPort, b.joinToken, filepath.Join(home, "cache"), filepath.Join(home, "state"), maxNodes, b.httpPort, filepath.Join(home, "nodes"), portStart)
	p := filepath.Join(home, "agent-config.toml")
	return p, os.WriteFile(p, []byte(cfg), 0o644)
}

// baseline execs the padded storage-server directly until /healthz answers.
func (b *bench) baseline(ctx context.Context) ([]time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for i := 0; i < b.o.runs; i++ {
		data := filepath.Join(b.dir, "baseline", strconv.Itoa(i))
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, err
		}
		t0 := time.Now()
		cmd, err := b.start("baseline", b.server, []string{"--port", strconv.Itoa(port), "--data-dir", data, "--node-id", "baseline"}, nil)
		if err != nil {
			return nil, err
		}
		if err := poll(ctx, 30*time.Second, func() bool { return healthy(port) }); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
		stop(cmd)
	}
	return out, nil
}

// startup measures `sutra-agent run` to first node healthy, cold and warm.
func (b *bench) startup(ctx context.Context) (cold, warm []time.Duration, err error) {
	portStart, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	portStart = 20000 + portStart%10000
	cfg, err := b.agentConfig("agent-startup", portStart, 1)
	if err != nil {
		return nil, nil, err
	}
	nodePort, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	// Register once and ask for the node, so that every measured run starts
	// from an agent the master already has a node for.
	agent, err := b.start("agent-startup", filepath.Join(b.binDir, "sutra-agent"), []string{"run", "--config", cfg}, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := poll(ctx, 60*time.Second, func() bool {
		_, err := b.rpc.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "agent-startup"})
		return err == nil
	}); err != nil {
		return nil, nil, fmt.Errorf("agent did not register: %w", err)
	}
	if _, err := b.rpc.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "agent-startup", NodeId: "bench-node", Port: uint32(nodePort)}); err != nil {
		return nil, nil, err
	}
	if err := poll(ctx, 90*time.Second, func() bool { return healthy(nodePort) }); err != nil {
		return nil, nil, fmt.Errorf("node did not come up: %w", err)
	}
	stop(agent)

	cache := filepath.Join(b.dir, "agent-startup", "cache")
	measure := func(clearCache bool) (time.Duration, error) {
		if clearCache {
			if err := os.RemoveAll(cache); err != nil {
				return 0, err
			}
		}
		if healthy(nodePort) {
			return 0, errors.New("node still serving before the run")
		}
		t0 := time.Now()
		agent, err := b.start("agent-startup", filepath.Join(b.binDir, "sutra-agent"), []string{"run", "--config", cfg}, nil)
		if err != nil {
			return 0, err
		}
		defer stop(agent)
		if err := poll(ctx, 60*time.Second, func() bool { return healthy(nodePort) }); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	for i := 0; i < b.o.runs; i++ {
		d, err := measure(true)
		if err != nil {
			return nil, nil, fmt.Errorf("cold run: %w", err)
		}
		cold = append(cold, d)
		d, err = measure(false)
		if err != nil {
			return nil, nil, fmt.Errorf("warm run: %w", err)
		}
		warm = append(warm, d)
	}
	return cold, warm, nil
}

type usage struct{ rss, cpu string }

// idleUsage runs an agent with o.nodes nodes and measures it once they are up.
func (b *bench) idleUsage(ctx context.Context) (usage, error) {
	portStart, err := freePort()
	if err != nil {
		return usage{}, err
	}
	portStart = 20000 + (portStart%1000)*10
	cfg, err := b.agentConfig("agent-idle", portStart, b.o.nodes)
	if err != nil {
		return usage{}, err
	}
	var env []string
	if b.o.agentEnv != "" {
		env = strings.Split(b.o.agentEnv, ",")
	}
	agent, err := b.start("agent-idle", filepath.Join(b.binDir, "sutra-agent"), []string{"run", "--config", cfg}, env)
	if err != nil {
		return usage{}, err
	}
	defer stop(agent)
	if err := poll(ctx, 60*time.Second, func() bool {
		_, err := b.rpc.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "agent-idle"})
		return err == nil
	}); err != nil {
		return usage{}, fmt.Errorf("agent did not register: %w", err)
	}
	for i := 0; i < b.o.nodes; i++ {
		if _, err := b.rpc.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "agent-idle", NodeId: fmt.Sprintf("idle-%d", i)}); err != nil {
			return usage{}, err
		}
	}
	if err := poll(ctx, 120*time.Second, func() bool {
		resp, err := b.rpc.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: "agent-idle"})
		if err != nil {
			return false
		}
		running := 0
		for _, n := range resp.GetNodes() {
			if n.GetStatus().GetState() == gridv1.NodeState_NODE_STATE_RUNNING {
				running++
			}
		}
		return running == b.o.nodes
	}); err != nil {
		return usage{}, fmt.Errorf("%d nodes did not all run: %w", b.o.nodes, err)
	}
	// Let the start-up work (downloads, probes ramp) settle for one health interval.
	time.Sleep(5 * time.Second)

	pid := agent.Process.Pid
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return usage{rss: "n/a (" + err.Error() + ")", cpu: "n/a"}, nil
	}
	t0 := time.Now()
	var rss []float64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(t0) < b.o.idle {
		select {
		case <-ctx.Done():
			return usage{}, ctx.Err()
		case <-tick.C:
		}
		if kb, err := statusKB(pid, "VmRSS"); err == nil {
			rss = append(rss, float64(kb)/1024)
		}
	}
	cpu1, err := cpuTicks(pid)
	if err != nil {
		return usage{}, err
	}
	wall := time.Since(t0).Seconds()
	hwm, _ := statusKB(pid, "VmHWM")
	anon, _ := statusKB(pid, "RssAnon")
	file, _ := statusKB(pid, "RssFile")
	var sum float64
	for _, r := range rss {
		sum += r
	}
	u := usage{
		rss: fmt.Sprintf("%.1f MB avg / %.1f MB max, peak %.1f MB (at the end: %.1f MB anonymous + %.1f MB file-backed, i.e. the mapped executable)",
			sum/float64(len(rss)), slices.Max(rss), float64(hwm)/1024, float64(anon)/1024, float64(file)/1024),
		cpu: fmt.Sprintf("%.2f %% of a core (%.2f s CPU in %.0f s)", 100*float64(cpu1-cpu0)/b.o.clockTck/wall, float64(cpu1-cpu0)/b.o.clockTck, wall),
	}
	return u, nil
}

func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// Fields after ")": state(0) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

func statusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", key, pid)
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("median %s (min %s, max %s)", ms(s[len(s)/2]), ms(s[0]), ms(s[len(s)-1]))
}

func healthy(port int) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == 200
}

// poll checks cond every 5 ms until it holds or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
