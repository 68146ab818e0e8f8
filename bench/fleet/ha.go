package main

// -masters 3 -etcd (issue 16): the fleet against three real masters
// (master.Run with the etcd store, each a child process of this binary)
// on a three-member etcd cluster (internal/etcdtest/etcdmember processes,
// built with `go build` unless -etcdmember names one). Every simulated
// agent talks to one master picked at random, and moves to another
// random master when its own stops answering (Unavailable), as real
// agents do with a master_host list. The run first measures the
// single master on bbolt (the default bench, kill -9 and restart
// included), then the three masters, and prints both side by side:
// heartbeat p50/p99, each master's CPU and peak RSS, etcd's write rate
// (etcd_mvcc_put_total and etcd_server_proposals_committed_total from a
// member's /metrics before and after the window) and etcd's own CPU/RSS,
// then kills -9 the leading master and times the new leader and the
// return of every agent (their first successful heartbeat begun after the
// kill).

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/master/pki"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// haResult is what the three-master run measured.
type haResult struct {
	register            time.Duration
	registerRetries     int
	heartbeats, errors  int
	p50, p99, max       time.Duration
	cpu, rss            []float64 // per master
	etcdCPU, etcdRSS    []float64 // per member
	puts, proposals     float64   // per second over the window
	failoverPuts        float64   // etcd puts from the kill until every agent was back
	leaderAfter         time.Duration
	back, orphansBack   time.Duration
	orphans, reattached int
	errorsAfterKill     int
}

// member is one etcdmember child.
type etcdChild struct {
	name, client string
	cmd          *exec.Cmd
}

// masterChild is one master child with its HTTP URL and data dir.
type masterChild struct {
	id, grpc, http, dir string
	ch                  *child
}

// runHA runs the single-master bbolt bench, then the three masters on
// etcd, and prints both.
func runHA(ctx context.Context, c config) error {
	c.plaintext = false
	fmt.Fprintln(c.out, "== baseline: one master on bbolt ==")
	single, err := bench(ctx, c)
	if err != nil {
		return fmt.Errorf("single master: %w", err)
	}
	fmt.Fprintf(c.out, "\n== %d masters on a 3-member etcd ==\n", c.masters)
	ha, err := haBench(ctx, c)
	if err != nil {
		return fmt.Errorf("%d masters on etcd: %w", c.masters, err)
	}
	fmt.Fprintf(c.out, "\n%d agents, %d nodes each, heartbeat every %s, mTLS; a 2-core machine shared with other work: figures are noisy\n", c.n, c.nodes, c.interval)
	fmt.Fprintf(c.out, "%-40s %16s %28s\n", "", "1 master, bbolt", fmt.Sprintf("%d masters, etcd", c.masters))
	row := func(name, a, b string) { fmt.Fprintf(c.out, "%-40s %16s %28s\n", name, a, b) }
	join := func(xs []float64, f string) string {
		var s []string
		for _, x := range xs {
			s = append(s, fmt.Sprintf(f, x))
		}
		return strings.Join(s, " ")
	}
	row("registration (all agents)", single.register.Round(time.Millisecond).String(),
		fmt.Sprintf("%s (%d retried)", ha.register.Round(time.Millisecond), ha.registerRetries))
	row("heartbeat p50", single.p50.Round(10*time.Microsecond).String(), ha.p50.Round(10*time.Microsecond).String())
	row("heartbeat p99", single.p99.Round(10*time.Microsecond).String(), ha.p99.Round(10*time.Microsecond).String())
	row("heartbeat errors", strconv.Itoa(single.errors), strconv.Itoa(ha.errors))
	row("master CPU (% of one core, each)", fmt.Sprintf("%.1f", single.cpu), join(ha.cpu, "%.1f"))
	row("master peak RSS (MiB, each)", fmt.Sprintf("%.1f", single.rss), join(ha.rss, "%.1f"))
	row("etcd CPU (% of one core, each)", "-", join(ha.etcdCPU, "%.1f"))
	row("etcd peak RSS (MiB, each)", "-", join(ha.etcdRSS, "%.1f"))
	row("etcd writes, steady (puts/s, proposals/s)", "-", fmt.Sprintf("%.1f, %.1f", ha.puts, ha.proposals))
	row("etcd puts during the failover", "-", fmt.Sprintf("%.0f", ha.failoverPuts))
	row("new leader after kill -9 of the leader", "-", ha.leaderAfter.Round(time.Millisecond).String())
	row("all agents back after kill -9", single.back.Round(time.Millisecond).String()+" (restart)", ha.back.Round(time.Millisecond).String())
	row("the dead master's agents re-attached", "-", fmt.Sprintf("%d/%d in %s", ha.reattached, ha.orphans, ha.orphansBack.Round(time.Millisecond)))
	return nil
}

// etcdMemberBinary returns c.etcdMember, or builds internal/etcdtest/etcdmember into dir.
func etcdMemberBinary(c config, dir string) (string, error) {
	if c.etcdMember != "" {
		return c.etcdMember, nil
	}
	out := filepath.Join(dir, "etcdmember")
	cmd := exec.Command("go", "build", "-o", out, "github.com/sutragrid/sutra/internal/etcdtest/etcdmember")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build etcdmember (or pass -etcdmember): %w\n%s", err, b)
	}
	return out, nil
}

func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startEtcd starts three members and waits for their ready lines.
func startEtcd(bin, dir string) ([]*etcdChild, error) {
	var ms []*etcdChild
	var peers, initial []string
	for i := range 3 {
		ca, err := freeLoopback()
		if err != nil {
			return nil, err
		}
		pa, err := freeLoopback()
		if err != nil {
			return nil, err
		}
		ms = append(ms, &etcdChild{name: fmt.Sprintf("e%d", i), client: "http://" + ca})
		peers = append(peers, "http://"+pa)
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i, pa))
	}
	ready := make(chan error, len(ms))
	for i, m := range ms {
		m.cmd = exec.Command(bin, "-name", m.name, "-data-dir", filepath.Join(dir, m.name), "-listen-client", m.client,
			"-listen-peer", peers[i], "-initial-cluster", strings.Join(initial, ","), "-auto-compaction-retention", "10000")
		logf, err := os.Create(filepath.Join(dir, m.name+".log")) // etcd's warnings, kept out of the report
		if err != nil {
			return ms, err
		}
		defer logf.Close()
		m.cmd.Stderr = logf
		out, err := m.cmd.StdoutPipe()
		if err != nil {
			return ms, err
		}
		if err := m.cmd.Start(); err != nil {
			return ms, fmt.Errorf("start etcd member %s: %w", m.name, err)
		}
		go func() {
			s := bufio.NewScanner(out)
			if s.Scan() && strings.HasPrefix(s.Text(), "etcdmember ready") {
				ready <- nil
				_, _ = io.Copy(io.Discard, out)
				return
			}
			ready <- fmt.Errorf("etcd member %s did not start", m.name)
		}()
	}
	for range ms {
		select {
		case err := <-ready:
			if err != nil {
				return ms, err
			}
		case <-time.After(time.Minute):
			return ms, errors.New("etcd members not ready within a minute")
		}
	}
	return ms, nil
}

func stopEtcd(ms []*etcdChild) {
	for _, m := range ms {
		if m.cmd != nil && m.cmd.Process != nil {
			_ = m.cmd.Process.Kill()
			_ = m.cmd.Wait()
		}
	}
}

// etcdCounters reads the two write counters of a member's /metrics.
func etcdCounters(client string) (puts, proposals float64, err error) {
	resp, err := http.Get(client + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "etcd_mvcc_put_total "); ok {
			puts, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(s.Text(), "etcd_server_proposals_committed_total "); ok {
			proposals, _ = strconv.ParseFloat(v, 64)
		}
	}
	return puts, proposals, s.Err()
}

// startMasterChild starts master id on etcd and parses "READY grpc http".
func startMasterChild(c config, id, dir, endpoints string) (*masterChild, error) {
	addr, err := freeLoopback()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", addr, "-data", dir, "-interval", c.interval.String(), "-rate-limit", c.rateLimit,
		"-metrics", c.metrics, "-etcd-endpoints", endpoints, "-master-id", id)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "READY" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("master %s did not start: %q %v", id, line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return &masterChild{id: id, grpc: f[1], http: "http://" + f[2], dir: dir, ch: &child{cmd: cmd}}, nil
}

// leaderOf asks master m's /api/cluster (with the operator token in its
// data dir) which master leads.
func leaderOf(m *masterChild) (string, error) {
	tok, err := opauth.ReadToken(filepath.Join(m.dir, opauth.TokenFile))
	if err != nil {
		return "", err
	}
	req, err := http.NewRequest(http.MethodGet, m.http+"/api/cluster", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		Leader string `json:"leader"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("GET %s/api/cluster = %d %s", m.http, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.Leader, nil
}

// copyCA puts m0's CA (certificate and key) into another master's tls dir
// before it starts: the agents' certificates were issued from it. (With
// the CA in the shared store the masters agree on it anyway; the copy is
// the same CA, so it is accepted.)
func copyCA(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// haAgent is an agent's failover state: the masters and its connection.
type haAgent struct {
	mu    sync.Mutex
	cfg   *tls.Config
	addrs []string
	cur   int
	conn  *grpc.ClientConn
	opts  []grpc.DialOption
}

// failover closes the connection and dials another master at random.
func (h *haAgent) failover(a *agent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := (h.cur + 1 + mrand.IntN(len(h.addrs)-1)) % len(h.addrs)
	conn, err := grpc.NewClient(h.addrs[next], append(h.opts, grpc.WithTransportCredentials(credentials.NewTLS(h.cfg)))...)
	if err != nil {
		return
	}
	_ = h.conn.Close()
	h.cur, h.conn = next, conn
	a.client = gridv1.NewGridMasterClient(conn)
}

func (h *haAgent) current() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs[h.cur]
}

// gone reports whether err means the master is gone (not an answer).
func gone(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}

func haBench(ctx context.Context, c config) (*haResult, error) {
	out := c.out
	r := &haResult{}
	dir, err := os.MkdirTemp("", "bench-fleet-ha-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := raiseNoFile(c.n + 300); err != nil {
		return nil, err
	}
	bin, err := etcdMemberBinary(c, dir)
	if err != nil {
		return nil, err
	}
	members, err := startEtcd(bin, dir)
	defer stopEtcd(members)
	if err != nil {
		return nil, err
	}
	var eps []string
	for _, m := range members {
		eps = append(eps, m.client)
	}
	fmt.Fprintf(out, "etcd: 3 members at %s\n", strings.Join(eps, ","))

	agents := make([]*agent, c.n)
	for i := range agents {
		a := &agent{id: fmt.Sprintf("bench-%06d", i), delay: c.upgradeDelay}
		for j := range c.nodes {
			a.nodes = append(a.nodes, &gridv1.NodeStatus{NodeId: fmt.Sprintf("%s-n%d", a.id, j), State: gridv1.NodeState_NODE_STATE_RUNNING,
				Pid: int64(10000 + j), Endpoint: fmt.Sprintf("10.0.0.1:%d", 7100+j), Version: "1.0.0", SinceUnix: time.Now().Unix()})
		}
		agents[i] = a
	}
	dirs := make([]string, c.masters)
	for i := range dirs {
		dirs[i] = filepath.Join(dir, fmt.Sprintf("m%d", i))
	}
	t := time.Now()
	ca, certs, err := identities(filepath.Join(dirs[0], "tls"), agents)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "issued %d agent certificates from m0's CA in %s\n", c.n, time.Since(t).Round(time.Millisecond))
	for _, d := range dirs[1:] {
		if err := copyCA(filepath.Join(dirs[0], "tls"), filepath.Join(d, "tls")); err != nil {
			return nil, err
		}
	}
	// m0 first (it puts its CA into the shared store), then the others.
	masters := make([]*masterChild, c.masters)
	defer func() {
		for _, m := range masters {
			if m != nil {
				m.ch.kill()
			}
		}
	}()
	endpoints := strings.Join(eps, ",")
	for i := range masters {
		if masters[i], err = startMasterChild(c, fmt.Sprintf("m%d", i), dirs[i], endpoints); err != nil {
			return nil, err
		}
	}
	var addrs []string
	for _, m := range masters {
		addrs = append(addrs, m.grpc)
	}
	fmt.Fprintf(out, "bench/fleet: %d agents, %d nodes each, mTLS, heartbeat every %s, %d masters %s\n", c.n, c.nodes, c.interval, c.masters, strings.Join(addrs, ","))

	dialOpts := []grpc.DialOption{grpc.WithReadBufferSize(8 << 10), grpc.WithWriteBufferSize(8 << 10), grpc.WithSharedWriteBuffer(true)}
	has := make([]*haAgent, c.n)
	for i, a := range agents {
		cfg := pki.ClientTLSConfig(ca.Roots(), certs[i])
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		h := &haAgent{cfg: cfg, addrs: addrs, cur: mrand.IntN(len(addrs)), opts: dialOpts}
		conn, err := grpc.NewClient(addrs[h.cur], append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
		if err != nil {
			return nil, err
		}
		h.conn = conn
		a.client = gridv1.NewGridMasterClient(conn)
		a.onGone = func() { h.failover(a) }
		has[i] = h
	}
	defer func() {
		for _, h := range has {
			_ = h.conn.Close()
		}
	}()

	// Each agent heartbeats as soon as it is registered, as real agents
	// do: registering 10,000 agents on etcd takes longer than the offline
	// threshold, and agents waiting for the others would be declared
	// offline and come back inside the measurement window.
	s := &stats{errs: map[codes.Code]int{}}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var loops sync.WaitGroup
	defer loops.Wait()
	defer cancel()
	start := time.Now()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var regErr atomic.Value
	var regRetries atomic.Int64
	for _, a := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			// As a real agent does: UNAVAILABLE (a conflict with another
			// master's write, a master gone) is retried after a moment.
			for try := 0; ; try++ {
				err := a.register(rctx)
				if err == nil {
					loops.Go(func() { a.loop(actx, c.interval, s) })
					break
				}
				if status.Code(err) != codes.Unavailable || try == 9 {
					regErr.Store(err)
					break
				}
				regRetries.Add(1)
				if strings.Contains(status.Convert(err).Message(), "connection error") { // the master is gone, not busy
					a.onGone()
				}
				time.Sleep(mrand.N(500 * time.Millisecond))
			}
		}()
	}
	wg.Wait()
	if err, _ := regErr.Load().(error); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	r.register = time.Since(start)
	r.registerRetries = int(regRetries.Load())
	fmt.Fprintf(out, "registered %d agents in %s (%.0f/s), %d registrations retried after UNAVAILABLE\n", c.n, r.register.Round(time.Millisecond), float64(c.n)/r.register.Seconds(), r.registerRetries)

	// Warm up one interval, then until etcd is quiet (no put for 2 s, at
	// most a minute): the window measures the steady state.
	sleep(ctx, c.interval)
	settle := time.Now()
	for quiet := 0; quiet < 2 && time.Since(settle) < time.Minute && ctx.Err() == nil; {
		p0, _, _ := etcdCounters(members[0].client)
		sleep(ctx, time.Second)
		p1, _, _ := etcdCounters(members[0].client)
		if p1 == p0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	fmt.Fprintf(out, "etcd quiet %s after the warm-up interval\n", time.Since(settle).Round(time.Second))
	s.mu.Lock()
	s.recording = true
	s.mu.Unlock()
	cpu0 := make([]time.Duration, len(masters))
	for i, m := range masters {
		cpu0[i], _ = m.ch.cpu()
	}
	ecpu0 := make([]time.Duration, len(members))
	for i, m := range members {
		ecpu0[i], _ = procCPU(strconv.Itoa(m.cmd.Process.Pid))
	}
	puts0, props0, err := etcdCounters(members[0].client)
	if err != nil {
		return nil, fmt.Errorf("etcd /metrics: %w", err)
	}
	t0 := time.Now()
	sleep(ctx, c.duration)
	wall := time.Since(t0)
	puts1, props1, err := etcdCounters(members[0].client)
	if err != nil {
		return nil, fmt.Errorf("etcd /metrics: %w", err)
	}
	w := s.endWindow(out, wall)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.heartbeats, r.p50, r.p99, r.max, r.errors = w.heartbeats, w.p50, w.p99, w.max, w.errors
	for i, m := range masters {
		cpu1, _ := m.ch.cpu()
		rss, _ := m.ch.peakRSS()
		r.cpu = append(r.cpu, 100*float64(cpu1-cpu0[i])/float64(wall))
		r.rss = append(r.rss, rss)
		fmt.Fprintf(out, "master %s: CPU %.1f%% of one core, peak RSS %.1f MiB\n", m.id, r.cpu[i], rss)
	}
	for i, m := range members {
		pid := strconv.Itoa(m.cmd.Process.Pid)
		cpu1, _ := procCPU(pid)
		rss, _ := procPeakRSS(pid)
		r.etcdCPU = append(r.etcdCPU, 100*float64(cpu1-ecpu0[i])/float64(wall))
		r.etcdRSS = append(r.etcdRSS, rss)
		fmt.Fprintf(out, "etcd %s: CPU %.1f%% of one core, peak RSS %.1f MiB\n", m.name, r.etcdCPU[i], rss)
	}
	r.puts, r.proposals = (puts1-puts0)/wall.Seconds(), (props1-props0)/wall.Seconds()
	fmt.Fprintf(out, "etcd writes: %.1f puts/s (etcd_mvcc_put_total +%.0f), %.1f proposals/s (etcd_server_proposals_committed_total +%.0f) over %s\n",
		r.puts, puts1-puts0, r.proposals, props1-props0, wall.Round(time.Millisecond))

	// kill -9 the leader; do not restart it.
	var lead *masterChild
	for _, m := range masters {
		id, err := leaderOf(m)
		if err != nil {
			return nil, fmt.Errorf("leader: %w", err)
		}
		for _, x := range masters {
			if x.id == id {
				lead = x
			}
		}
		if lead != nil {
			break
		}
	}
	if lead == nil {
		return nil, errors.New("no master leads")
	}
	var orphans []*agent
	for i, h := range has {
		if h.current() == lead.grpc {
			orphans = append(orphans, agents[i])
		}
	}
	r.orphans = len(orphans)
	fmt.Fprintf(out, "killing the leading master %s (-9; %d agents on it)...\n", lead.id, len(orphans))
	killPuts, _, _ := etcdCounters(members[0].client)
	kill := time.Now()
	lead.ch.kill()
	s.mark.Store(time.Now().UnixNano())
	s.mu.Lock()
	s.recording = true
	s.mu.Unlock()
	deadline := time.Now().Add(4*c.interval + time.Minute)
	for r.leaderAfter == 0 {
		for _, m := range masters {
			if m == lead {
				continue
			}
			if id, err := leaderOf(m); err == nil && id != "" && id != lead.id {
				r.leaderAfter = time.Since(kill)
				fmt.Fprintf(out, "%s leads %s after the kill\n", id, r.leaderAfter.Round(time.Millisecond))
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, errors.New("no new leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		done, last, orphansDone, orphansLast := 0, int64(0), 0, int64(0)
		for _, a := range agents {
			if v := a.okAfter.Load(); v != 0 {
				done++
				last = max(last, v)
			}
		}
		for _, a := range orphans {
			if v := a.okAfter.Load(); v != 0 {
				orphansDone++
				orphansLast = max(orphansLast, v)
			}
		}
		if done == len(agents) {
			r.back, r.reattached = time.Unix(0, last).Sub(kill), orphansDone
			if orphansLast != 0 {
				r.orphansBack = time.Unix(0, orphansLast).Sub(kill)
			}
			if p, _, err := etcdCounters(members[0].client); err == nil {
				r.failoverPuts = p - killPuts
			}
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("only %d of %d agents came back (%d of the %d on the dead master)", done, len(agents), orphansDone, len(orphans))
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.mu.Lock()
	s.recording = false
	for _, n := range s.errs {
		r.errorsAfterKill += n
	}
	s.mu.Unlock()
	fmt.Fprintf(out, "all %d agents heartbeating again %s after the kill; the %d agents of %s re-attached to the others within %s (%d failed calls meanwhile, %.0f etcd puts)\n",
		len(agents), r.back.Round(time.Millisecond), r.reattached, lead.id, r.orphansBack.Round(time.Millisecond), r.errorsAfterKill, r.failoverPuts)
	return r, nil
}
