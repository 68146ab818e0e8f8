package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"github.com/sutragrid/sutra/supervisor"
)

// haMaster is one of several masters sharing a CA: it counts the
// registrations and heartbeats it answers and can be told to answer
// heartbeats with an application error.
type haMaster struct {
	gridv1.UnimplementedGridMasterServer
	name string
	srv  *grpc.Server
	addr string

	mu      sync.Mutex
	regs    []*gridv1.RegisterAgentRequest
	regAt   []time.Time
	beats   int
	beatErr error
	sni     []string
}

func (m *haMaster) RegisterAgent(_ context.Context, r *gridv1.RegisterAgentRequest) (*gridv1.RegisterAgentResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.regs = append(m.regs, r)
	m.regAt = append(m.regAt, time.Now())
	// No interval: the agent keeps Options.HeartbeatInterval (fast tests).
	return &gridv1.RegisterAgentResponse{Desired: &gridv1.DesiredState{Generation: 7}}, nil
}

func (m *haMaster) Heartbeat(context.Context, *gridv1.HeartbeatRequest) (*gridv1.HeartbeatResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.beatErr != nil {
		return nil, m.beatErr
	}
	m.beats++
	return &gridv1.HeartbeatResponse{Desired: &gridv1.DesiredState{Generation: 7}}, nil
}

func (m *haMaster) counts() (regs, beats int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.regs), m.beats
}

// startHAMaster serves a haMaster on addr ("127.0.0.1:0" or a fixed one)
// over TLS with a certificate for names (DNS names or IPs) from ca.
func startHAMaster(t *testing.T, ca *testCA, name, addr string, names ...string) *haMaster {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &haMaster{name: name, addr: ln.Addr().String()}
	key, _ := mtls.NewKey()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		m.mu.Lock()
		m.sni = append(m.sni, h.ServerName)
		m.mu.Unlock()
		return nil, nil
	}
	m.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	gridv1.RegisterGridMasterServer(m.srv, m)
	go func() { _ = m.srv.Serve(ln) }()
	t.Cleanup(m.srv.Stop)
	return m
}

// haAgent runs a client for MasterAddr addrs with an enrolled identity
// and two running nodes; it returns the client and its log.
func haAgent(t *testing.T, ca *testCA, addrs string, resolver func(context.Context, string) ([]string, error)) (*Client, *testutil.SyncBuffer) {
	t.Helper()
	dir := t.TempDir()
	ca.writeAgent(t, dir, "a1")
	var logBuf testutil.SyncBuffer
	c, err := New(Options{
		MasterAddr: addrs, AgentID: "a1", TLSDir: dir, Resolver: resolver,
		Report: func() Report {
			return Report{AppliedGeneration: 7, Nodes: []NodeStatus{
				{NodeID: "n1", State: supervisor.StateRunning, PID: 11}, {NodeID: "n2", State: supervisor.StateRunning, PID: 12}}}
		},
		OnDesired:         func(Desired) {},
		HeartbeatInterval: 50 * time.Millisecond,
		BackoffMin:        20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		RPCTimeout: 2 * time.Second,
		Logger:     slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; _ = c.Close() })
	return c, &logBuf
}

// current waits until exactly one of ms has registered the agent and
// returns it.
func current(t *testing.T, ms ...*haMaster) *haMaster {
	t.Helper()
	var got *haMaster
	testutil.WaitFor(t, 5*time.Second, "the agent to register with a master", func() bool {
		for _, m := range ms {
			if r, _ := m.counts(); r > 0 {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

// Issue 16: an agent on [A, B] connected to A moves to B when A dies,
// registers there (re-sending its nodes' statuses) within about one
// heartbeat interval plus backoff, logs the move once, and goes on
// heartbeating B.
func TestFailoverToAnotherMaster(t *testing.T) {
	ca := newTestCA(t)
	a := startHAMaster(t, ca, "A", "127.0.0.1:0", "127.0.0.1")
	b := startHAMaster(t, ca, "B", "127.0.0.1:0", "127.0.0.1")
	c, logBuf := haAgent(t, ca, a.addr+", "+b.addr, nil)

	first := current(t, a, b)
	other := b
	if first == b {
		other = a
	}
	testutil.WaitFor(t, 5*time.Second, "heartbeats to the first master", func() bool { _, n := first.counts(); return n >= 2 })
	if got := c.Master(); got != first.addr {
		t.Fatalf("Master() = %s, want %s", got, first.addr)
	}
	stopped := time.Now()
	first.srv.Stop()

	testutil.WaitFor(t, 5*time.Second, "the agent to register with the other master", func() bool { r, _ := other.counts(); return r > 0 })
	other.mu.Lock()
	reg, silence := other.regs[0], other.regAt[0].Sub(stopped)
	other.mu.Unlock()
	// One heartbeat interval (50 ms, ±10 %) + the survivor's backoff (none:
	// it never failed) + a call to the dead master; generous for -race.
	if silence > 1500*time.Millisecond {
		t.Errorf("registered with the other master %v after the first stopped, want about one heartbeat interval", silence)
	}
	if len(reg.GetNodes()) != 2 || reg.GetNodes()[0].GetNodeId() != "n1" {
		t.Errorf("registration with the new master carries nodes %v, want n1 and n2", reg.GetNodes())
	}
	testutil.WaitFor(t, 5*time.Second, "heartbeats to the other master", func() bool { _, n := other.counts(); return n >= 3 })
	if got := c.Master(); got != other.addr {
		t.Errorf("Master() = %s after failover, want %s", got, other.addr)
	}
	if ok, _ := c.Connected(); !ok {
		t.Error("Connected() = false after failover")
	}
	log := logBuf.String()
	if n := strings.Count(log, "master unreachable; moving to another master"); n != 1 {
		t.Errorf("failover logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "from="+first.addr) || !strings.Contains(log, "to="+other.addr) || !strings.Contains(log, "retry_in=") {
		t.Errorf("failover line does not name from, to and retry_in:\n%s", log)
	}
}

// Both masters up: the agent stays on its first master (no alternation).
func TestStickyMaster(t *testing.T) {
	ca := newTestCA(t)
	a := startHAMaster(t, ca, "A", "127.0.0.1:0", "127.0.0.1")
	b := startHAMaster(t, ca, "B", "127.0.0.1:0", "127.0.0.1")
	haAgent(t, ca, a.addr+","+b.addr, nil)
	first := current(t, a, b)
	other := b
	if first == b {
		other = a
	}
	testutil.WaitFor(t, 10*time.Second, "20 heartbeats", func() bool { _, n := first.counts(); return n >= 20 })
	if r, n := other.counts(); r != 0 || n != 0 {
		t.Errorf("the other master saw %d registrations and %d heartbeats, want none", r, n)
	}
	if r, _ := first.counts(); r != 1 {
		t.Errorf("the first master saw %d registrations, want 1", r)
	}
}

// Application errors from a working master (a bad request, a rate limit)
// keep the agent on it: another master would answer the same.
func TestApplicationErrorKeepsMaster(t *testing.T) {
	for _, code := range []codes.Code{codes.InvalidArgument, codes.ResourceExhausted} {
		t.Run(code.String(), func(t *testing.T) {
			ca := newTestCA(t)
			a := startHAMaster(t, ca, "A", "127.0.0.1:0", "127.0.0.1")
			b := startHAMaster(t, ca, "B", "127.0.0.1:0", "127.0.0.1")
			_, logBuf := haAgent(t, ca, a.addr+","+b.addr, nil)
			first := current(t, a, b)
			other := b
			if first == b {
				other = a
			}
			first.mu.Lock()
			first.beatErr = status.Error(code, "no")
			first.mu.Unlock()
			testutil.WaitFor(t, 5*time.Second, "failed heartbeats", func() bool {
				return strings.Count(logBuf.String(), "heartbeat failed") >= 3
			})
			if r, n := other.counts(); r != 0 || n != 0 {
				t.Errorf("%s moved the agent: the other master saw %d registrations, %d heartbeats", code, r, n)
			}
		})
	}
}

// A name that resolves to several addresses counts as several masters:
// both are tried, and TLS checks the certificate against the name (the
// masters' certificates name only masters.test, no IP).
func TestDNSNameWithSeveralRecords(t *testing.T) {
	ca := newTestCA(t)
	a := startHAMaster(t, ca, "A", "127.0.0.1:0", "masters.test")
	_, port, _ := net.SplitHostPort(a.addr)
	b := startHAMaster(t, ca, "B", "127.0.0.2:"+port, "masters.test")
	var lookups sync.Map
	resolver := func(_ context.Context, host string) ([]string, error) {
		n, _ := lookups.LoadOrStore(host, new(int))
		*n.(*int)++
		if host != "masters.test" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []string{"127.0.0.1", "127.0.0.2"}, nil
	}
	c, logBuf := haAgent(t, ca, "masters.test:"+port, resolver)
	first := current(t, a, b)
	other := b
	if first == b {
		other = a
	}
	if got := c.Master(); got != "masters.test:"+port {
		t.Errorf("Master() = %s, want the configured name", got)
	}
	testutil.WaitFor(t, 5*time.Second, "heartbeats", func() bool { _, n := first.counts(); return n >= 2 })
	first.srv.Stop()
	testutil.WaitFor(t, 5*time.Second, "the agent to register at the name's other address", func() bool { r, _ := other.counts(); return r > 0 })
	for _, m := range []*haMaster{a, b} {
		m.mu.Lock()
		sni := append([]string(nil), m.sni...)
		m.mu.Unlock()
		for _, s := range sni {
			if s != "masters.test" {
				t.Errorf("master %s saw TLS server name %q, want masters.test", m.name, s)
			}
		}
		if len(sni) == 0 {
			t.Errorf("master %s was never dialled", m.name)
		}
	}
	if !strings.Contains(logBuf.String(), "to=\"masters.test:"+port+" ("+other.addr+")\"") {
		t.Errorf("failover line does not name the address moved to:\n%s", logBuf.String())
	}
	if _, ok := lookups.Load("masters.test"); !ok {
		t.Error("the resolver was never asked")
	}
}

// Enrollment tries the masters in turn: with one of two masters down, the
// agent enrolls with the other whichever it tries first.
func TestEnrollmentTriesTheMasters(t *testing.T) {
	ca := newTestCA(t)
	m := &enrollMaster{ca: ca, t: t}
	live := startTLSFakeMaster(t, ca, m)
	dead := testutil.FreeAddr(t)
	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(4) {
		registered := make(chan struct{}, 4)
		opts := enrollOptions(dead+","+live, filepath.Join(t.TempDir(), "tls"), tok.String(), registered)
		opts.Rand = mrand.New(mrand.NewPCG(seed, seed))
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		select {
		case <-registered:
		case err := <-done:
			t.Fatalf("seed %d: Run returned before registering: %v", seed, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("seed %d: not enrolled and registered within 10s", seed)
		}
		cancel()
		<-done
		_ = c.Close()
	}
	if n := m.enrollCount(); n != 4 {
		t.Errorf("%d enrollments with the live master, want 4", n)
	}
}

// Every master down: the agent goes round them with each one's backoff
// (not in a tight loop) and warns about every 10th move only.
func TestAllMastersDownBacksOffQuietly(t *testing.T) {
	ca := newTestCA(t)
	_, logBuf := haAgent(t, ca, testutil.FreeAddr(t)+","+testutil.FreeAddr(t), nil)
	time.Sleep(1500 * time.Millisecond)
	log := logBuf.String()
	moves := strings.Count(log, "moving to another master")
	warned := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "moving to another master") && strings.Contains(l, "level=WARN") {
			warned++
		}
	}
	// Backoff 20 ms doubling to 200 ms per master, full jitter: a few
	// dozen moves in 1.5 s at most, never thousands.
	if moves < 2 || moves > 150 {
		t.Errorf("%d moves in 1.5 s with both masters down, want a backed-off handful", moves)
	}
	if want := (moves+9)/10 + 1; warned > want {
		t.Errorf("%d of %d moves warned, want at most %d", warned, moves, want)
	}
}
