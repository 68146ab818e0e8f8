// Package etcdtest runs real etcd servers in-process for tests
// (go.etcd.io/etcd/server/v3/embed on loopback ports): one member, or a
// cluster of three whose members a test can stop and start again. It is
// the etcd every test of the etcd backend, the leader election and the
// high-availability end-to-end tests talk to; nothing here is a fake.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Member is one running (or stopped) etcd member.
type Member struct {
	Name      string
	Dir       string
	ClientURL string // http://127.0.0.1:port
	PeerURL   string

	mu      sync.Mutex
	e       *embed.Etcd
	closing chan struct{} // closed when a killed member's listeners are gone
	cluster string
	state   string
	opts    Options
}

// Options tune the members; zero values take the defaults.
type Options struct {
	// MaxTxnOps is etcd's --max-txn-ops (default 1024: the fleet's group
	// commit writes larger batches than etcd's default 128).
	MaxTxnOps uint
	// AutoCompactionRetention in revisions (0: none).
	AutoCompactionRetention int
}

// Cluster is a set of members started together.
type Cluster struct {
	Members []*Member
}

// Endpoints lists the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Start runs a one-member etcd for the test; it stops at cleanup.
func Start(t testing.TB) *Cluster { return StartCluster(t, 1, Options{}) }

// StartCluster runs n members (1 or 3 in practice) in one cluster; they
// stop at cleanup.
func StartCluster(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	if o.MaxTxnOps == 0 {
		o.MaxTxnOps = 1024
	}
	dir := t.TempDir()
	c := &Cluster{}
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			Dir:       filepath.Join(dir, fmt.Sprintf("m%d", i)),
			ClientURL: "http://" + freeAddr(t),
			PeerURL:   "http://" + freeAddr(t),
			state:     embed.ClusterStateFlagNew,
			opts:      o,
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	errs := make(chan error, n)
	for _, m := range c.Members {
		m.cluster = strings.Join(initial, ",")
		go func() { errs <- m.Start() }()
	}
	for range c.Members {
		if err := <-errs; err != nil {
			c.stopAll()
			t.Fatalf("etcdtest: %v", err)
		}
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *Cluster) stopAll() {
	for _, m := range c.Members {
		m.Stop()
	}
}

// Start starts the member (again, after Stop, on the same data and ports).
func (m *Member) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		return nil
	}
	if m.closing != nil {
		<-m.closing
		m.closing = nil
	}
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	cu, _ := url.Parse(m.ClientURL)
	pu, _ := url.Parse(m.PeerURL)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = m.cluster
	cfg.ClusterState = m.state
	cfg.InitialClusterToken = "sutra-etcdtest"
	cfg.MaxTxnOps = m.opts.MaxTxnOps
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if m.opts.AutoCompactionRetention > 0 {
		cfg.AutoCompactionMode = "revision"
		cfg.AutoCompactionRetention = fmt.Sprint(m.opts.AutoCompactionRetention)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcd member %s: %w", m.Name, err)
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("etcd member %s not ready in 30s", m.Name)
	}
	m.e = e
	m.state = embed.ClusterStateFlagExisting
	return nil
}

// Stop stops the member, keeping its data (a crash of its process).
func (m *Member) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
	if m.closing != nil {
		<-m.closing
		m.closing = nil
	}
}

// Kill stops the member the way kill -9 does to a leader: its raft stops
// at once, with no leadership transfer, and requests it had taken are
// never answered (until its listeners close, in the background, within
// etcd's request timeout). Start waits for that before starting again.
func (m *Member) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return
	}
	e := m.e
	m.e = nil
	e.Server.HardStop()
	done := make(chan struct{})
	m.closing = done
	go func() { defer close(done); e.Close() }()
}

// IsLeader reports whether the running member is the raft leader.
func (m *Member) IsLeader() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e != nil && m.e.Server.Leader() == m.e.Server.MemberID()
}

// Leader returns the running member that leads, or nil.
func (c *Cluster) Leader() *Member {
	for _, m := range c.Members {
		if m.IsLeader() {
			return m
		}
	}
	return nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
