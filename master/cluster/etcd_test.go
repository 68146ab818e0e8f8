package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

const testPrefix = "/sutra-test/"

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// syncBuf is a log sink tests can read while coordinators write to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newCoord(t *testing.T, cli *clientv3.Client, id string, ttl time.Duration, log *syncBuf, onLeading func(context.Context)) *Etcd {
	t.Helper()
	var l *slog.Logger
	if log != nil {
		l = slog.New(slog.NewTextHandler(log, nil))
	}
	e, err := NewEtcd(context.Background(), EtcdOptions{
		Client:    cli,
		Prefix:    testPrefix,
		Self:      Member{ID: id, GRPCAddr: id + ":7000", HTTPURL: "http://" + id + ":7001", Version: "test", Started: time.Now().UTC()},
		LeaseTTL:  ttl,
		Logger:    l,
		OnLeading: onLeading,
	})
	if err != nil {
		t.Fatalf("NewEtcd(%s): %v", id, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// leaders returns the coordinators that lead now.
func leaders(cs []*Etcd) []*Etcd {
	var out []*Etcd
	for _, c := range cs {
		if c.Leading() {
			out = append(out, c)
		}
	}
	return out
}

func oneLeader(t *testing.T, cs []*Etcd, timeout time.Duration) *Etcd {
	t.Helper()
	var l *Etcd
	waitFor(t, timeout, "exactly one leader", func() bool {
		ls := leaders(cs)
		if len(ls) == 1 {
			l = ls[0]
			return true
		}
		return false
	})
	return l
}

// fenceLease is the lease of the fence's election key (election/<hex>).
func fenceLease(t *testing.T, c store.Cond) clientv3.LeaseID {
	t.Helper()
	hex, ok := strings.CutPrefix(string(c.Key), "election/")
	if !ok || c.Table != store.TableMasters || c.Rev <= 0 {
		t.Fatalf("fence %+v: want masters/election/<lease hex> at a revision", c)
	}
	id, err := strconv.ParseInt(hex, 16, 64)
	if err != nil {
		t.Fatalf("fence key %q: %v", c.Key, err)
	}
	return clientv3.LeaseID(id)
}

func TestElectionOneLeader(t *testing.T) {
	t.Parallel()
	ec := etcdtest.Start(t)
	var cs []*Etcd
	for i := range 3 {
		cs = append(cs, newCoord(t, newClient(t, ec.Endpoints()), fmt.Sprintf("m%d", i), 0, nil, nil))
	}
	l := oneLeader(t, cs, 5*time.Second)
	// Stays one: nobody else is elected meanwhile.
	time.Sleep(300 * time.Millisecond)
	if ls := leaders(cs); len(ls) != 1 || ls[0] != l {
		t.Fatalf("leaders after 300ms = %d, want only %s", len(ls), l.Self().ID)
	}
	if !l.Self().Leader {
		t.Errorf("leader's Self().Leader = false")
	}
	for _, c := range cs {
		ms, err := c.Members(context.Background())
		if err != nil {
			t.Fatalf("%s Members: %v", c.Self().ID, err)
		}
		if len(ms) != 3 {
			t.Fatalf("%s Members = %d, want 3", c.Self().ID, len(ms))
		}
		var lead []string
		for i, m := range ms {
			if want := fmt.Sprintf("m%d", i); m.ID != want || m.GRPCAddr != want+":7000" {
				t.Errorf("Members[%d] = %+v, want %s sorted", i, m, want)
			}
			if m.Leader {
				lead = append(lead, m.ID)
			}
		}
		if len(lead) != 1 || lead[0] != l.Self().ID {
			t.Errorf("%s sees leaders %v, want [%s]", c.Self().ID, lead, l.Self().ID)
		}
		for _, o := range cs {
			if !c.Alive(o.Self().ID) {
				t.Errorf("%s: Alive(%s) = false", c.Self().ID, o.Self().ID)
			}
		}
		if c.Alive("nobody") {
			t.Errorf("Alive(nobody) = true")
		}
		conds, ok := c.Fence()
		if ok != (c == l) || (ok && len(conds) != 1) {
			t.Errorf("%s Fence() = %v, %v", c.Self().ID, conds, ok)
		}
	}
}

func TestHandOverOnClose(t *testing.T) {
	t.Parallel()
	ec := etcdtest.Start(t)
	log := &syncBuf{}
	var cs []*Etcd
	for i := range 3 {
		// A long TTL: the hand-over must not wait for it.
		cs = append(cs, newCoord(t, newClient(t, ec.Endpoints()), fmt.Sprintf("m%d", i), 20*time.Second, log, nil))
	}
	l := oneLeader(t, cs, 5*time.Second)
	var rest []*Etcd
	for _, c := range cs {
		if c != l {
			rest = append(rest, c)
		}
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if l.Leading() {
		t.Fatalf("closed leader still Leading")
	}
	n := oneLeader(t, rest, 2*time.Second)
	t.Logf("hand-over on close: %s leads %s after the close", n.Self().ID, time.Since(start))
	for _, c := range rest {
		waitFor(t, 2*time.Second, "closed master not alive", func() bool { return !c.Alive(l.Self().ID) })
		ms, err := c.Members(context.Background())
		if err != nil || len(ms) != 2 {
			t.Fatalf("Members after close = %v, %v; want 2", ms, err)
		}
	}
	for _, want := range []string{"became leader", "lost leadership", "master left", "left the control plane"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestHandOverOnCrash(t *testing.T) {
	t.Parallel()
	ec := etcdtest.Start(t)
	const ttl = 2 * time.Second
	clients := map[*Etcd]*clientv3.Client{}
	var cs []*Etcd
	for i := range 3 {
		cli := newClient(t, ec.Endpoints())
		c := newCoord(t, cli, fmt.Sprintf("m%d", i), ttl, nil, nil)
		clients[c] = cli
		cs = append(cs, c)
	}
	l := oneLeader(t, cs, 5*time.Second)
	var rest []*Etcd
	for _, c := range cs {
		if c != l {
			rest = append(rest, c)
		}
	}
	// kill -9: the client goes away, nothing resigns or revokes.
	start := time.Now()
	clients[l].Close()
	n := oneLeader(t, rest, ttl+2*time.Second)
	took := time.Since(start)
	t.Logf("hand-over after the leader's crash: %s leads after %s (lease TTL %s)", n.Self().ID, took, ttl)
	if l.Leading() {
		t.Errorf("crashed leader still Leading")
	}
	waitFor(t, time.Second, "crashed master not alive", func() bool { return !n.Alive(l.Self().ID) })
}

func TestStaleLeaderIsFenced(t *testing.T) {
	t.Parallel()
	ec := etcdtest.Start(t)
	const ttl = 2 * time.Second
	admin := newClient(t, ec.Endpoints())
	cs := []*Etcd{
		newCoord(t, newClient(t, ec.Endpoints()), "a", ttl, nil, nil),
		newCoord(t, newClient(t, ec.Endpoints()), "b", ttl, nil, nil),
	}
	a := oneLeader(t, cs, 5*time.Second)
	b := cs[0]
	if b == a {
		b = cs[1]
	}
	conds, ok := a.Fence()
	if !ok || len(conds) != 1 {
		t.Fatalf("leader Fence() = %v, %v", conds, ok)
	}
	lease := fenceLease(t, conds[0])
	fencedPut := func(c store.Cond) bool {
		t.Helper()
		k := etcdstore.Key(testPrefix, c.Table, c.Key)
		resp, err := admin.Txn(context.Background()).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", int64(c.Rev))).
			Then(clientv3.OpPut(testPrefix+"agents/x", "by "+string(c.Key))).Commit()
		if err != nil {
			t.Fatalf("txn: %v", err)
		}
		return resp.Succeeded
	}
	if !fencedPut(conds[0]) {
		t.Fatalf("the leader's own fence does not hold: %+v", conds[0])
	}
	// A's lease ends as in a partition: revoked by somebody else.
	if _, err := admin.Revoke(context.Background(), lease); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	waitFor(t, ttl+2*time.Second, "b leads", b.Leading)
	if fencedPut(conds[0]) {
		t.Fatalf("a write fenced by the deposed leader's election key succeeded")
	}
	took := waitFor(t, ttl, "a not leading", func() bool { return !a.Leading() })
	t.Logf("deposed leader stopped leading %s after b was elected", took)
	if c, ok := a.Fence(); ok {
		t.Errorf("deposed leader Fence() = %v, true", c)
	}
	bc, ok := b.Fence()
	if !ok || !fencedPut(bc[0]) {
		t.Errorf("new leader's fence %v does not hold", bc)
	}
	if l := leaders(cs); len(l) != 1 || l[0] != b {
		t.Errorf("leaders = %d, want only b", len(l))
	}
	checkStoreFence(t, ec.Endpoints(), conds, bc)
}

func TestDuplicateIDRefused(t *testing.T) {
	t.Parallel()
	ec := etcdtest.Start(t)
	const ttl = 2 * time.Second
	cli := newClient(t, ec.Endpoints())
	newCoord(t, cli, "m1", ttl, nil, nil)
	start := time.Now()
	_, err := NewEtcd(context.Background(), EtcdOptions{Client: newClient(t, ec.Endpoints()), Prefix: testPrefix, Self: Member{ID: "m1"}, LeaseTTL: ttl})
	if !errors.Is(err, ErrDuplicateID) || !strings.Contains(err.Error(), "give each master its own --master-id") {
		t.Fatalf("second master m1: err = %v, want ErrDuplicateID naming --master-id", err)
	}
	t.Logf("refused after %s: %v", time.Since(start), err)
	// The first one crashes: its registration expires with its lease and
	// the same id can start again.
	cli.Close()
	newCoord(t, newClient(t, ec.Endpoints()), "m1", ttl, nil, nil)
}

func TestLeadingTurnsFalseWithoutKeepAlive(t *testing.T) {
	t.Parallel()
	ec := etcdtest.Start(t)
	const ttl = 3 * time.Second
	log := &syncBuf{}
	c := newCoord(t, newClient(t, ec.Endpoints()), "m0", ttl, log, nil)
	waitFor(t, 5*time.Second, "leads", c.Leading)
	_, _, changed := c.Leadership()
	start := time.Now()
	var notLeading atomic.Int64 // when Leading turned false, ns since start
	go func() {
		for c.Leading() {
			time.Sleep(5 * time.Millisecond)
		}
		notLeading.Store(int64(time.Since(start)))
	}()
	ec.Members[0].Stop()
	stopped := time.Since(start)
	waitFor(t, ttl, "Leading false with etcd down", func() bool { return notLeading.Load() != 0 })
	took := time.Duration(notLeading.Load())
	if took >= ttl {
		t.Errorf("Leading turned false %s after etcd began to stop, want < TTL %s", took, ttl)
	}
	t.Logf("Leading turned false %s after etcd began to stop (stop took %s; TTL %s)", took, stopped, ttl)
	select {
	case <-changed:
	case <-time.After(ttl / 5):
		t.Errorf("Leadership change not notified")
	}
	if _, ok := c.Fence(); ok {
		t.Errorf("Fence ok with etcd down")
	}
	if !strings.Contains(log.String(), "keep-alive overdue") {
		t.Errorf("log lacks the reason:\n%s", log)
	}
	// etcd comes back after the lease expired: the master campaigns on a
	// new session and leads again.
	time.Sleep(ttl)
	restarted := time.Now()
	if err := ec.Members[0].Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd restart took %s", time.Since(restarted))
	took = waitFor(t, 4*ttl, "leads again", c.Leading)
	t.Logf("leads again %s after etcd restarted", took)
}

func TestRunWhileLeading(t *testing.T) {
	t.Parallel()
	t.Run("single", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var runs atomic.Int32
		done := make(chan struct{})
		go func() {
			defer close(done)
			RunWhileLeading(ctx, NewSingle(Member{ID: "m"}), func(ctx context.Context) {
				runs.Add(1)
				<-ctx.Done()
			})
		}()
		waitFor(t, time.Second, "fn runs", func() bool { return runs.Load() == 1 })
		time.Sleep(3 * pollInterval)
		cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("RunWhileLeading did not return when ctx ended")
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("runs = %d, want 1", n)
		}
	})
	t.Run("single fn returns", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 4*pollInterval)
		defer cancel()
		var runs atomic.Int32
		RunWhileLeading(ctx, NewSingle(Member{ID: "m"}), func(context.Context) { runs.Add(1) })
		if n := runs.Load(); n != 1 {
			t.Errorf("runs = %d, want 1 (not again without a new election)", n)
		}
	})
	t.Run("etcd", func(t *testing.T) {
		ec := etcdtest.Start(t)
		const ttl = 2 * time.Second
		admin := newClient(t, ec.Endpoints())
		type counter struct{ runs, running atomic.Int32 }
		cnt := map[string]*counter{"a": {}, "b": {}}
		fn := func(id string) func(context.Context) {
			return func(ctx context.Context) {
				c := cnt[id]
				c.runs.Add(1)
				c.running.Add(1)
				defer c.running.Add(-1)
				<-ctx.Done()
			}
		}
		cs := []*Etcd{
			newCoord(t, newClient(t, ec.Endpoints()), "a", ttl, nil, fn("a")),
			newCoord(t, newClient(t, ec.Endpoints()), "b", ttl, nil, fn("b")),
		}
		first := oneLeader(t, cs, 5*time.Second)
		second := cs[0]
		if second == first {
			second = cs[1]
		}
		f, s := cnt[first.Self().ID], cnt[second.Self().ID]
		waitFor(t, time.Second, "fn runs on the leader", func() bool { return f.running.Load() == 1 })
		time.Sleep(200 * time.Millisecond)
		if s.runs.Load() != 0 {
			t.Fatalf("fn ran on the follower")
		}
		depose := func(c *Etcd) {
			t.Helper()
			conds, ok := c.Fence()
			if !ok {
				t.Fatalf("%s does not lead", c.Self().ID)
			}
			if _, err := admin.Revoke(context.Background(), fenceLease(t, conds[0])); err != nil {
				t.Fatal(err)
			}
		}
		depose(first)
		waitFor(t, ttl, "fn cancelled on the deposed leader", func() bool { return f.running.Load() == 0 })
		waitFor(t, ttl+2*time.Second, "fn runs on the new leader", func() bool { return s.running.Load() == 1 })
		// The first master came back on a new session, behind the second;
		// depose the second: the first leads and runs fn again.
		waitFor(t, 2*ttl, "first master campaigning again", func() bool {
			r, err := admin.Get(context.Background(), second.electionPfx+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && r.Count == 2
		})
		depose(second)
		waitFor(t, ttl+2*time.Second, "fn runs again on the re-elected master", func() bool { return f.runs.Load() == 2 && f.running.Load() == 1 })
		waitFor(t, ttl, "fn cancelled on the second", func() bool { return s.running.Load() == 0 })
		if n := s.runs.Load(); n != 1 {
			t.Errorf("second master ran fn %d times, want 1", n)
		}
	})
}

func TestEtcdOptionsValidate(t *testing.T) {
	cli := &clientv3.Client{}
	for _, tc := range []struct {
		name string
		o    EtcdOptions
		want string
	}{
		{"ok", EtcdOptions{Client: cli, Self: Member{ID: "host:7000"}}, ""},
		{"no client", EtcdOptions{Self: Member{ID: "m"}}, "client"},
		{"empty id", EtcdOptions{Client: cli}, "master id"},
		{"slash id", EtcdOptions{Client: cli, Self: Member{ID: "a/b"}}, "master id"},
		{"space id", EtcdOptions{Client: cli, Self: Member{ID: "a b"}}, "master id"},
		{"long id", EtcdOptions{Client: cli, Self: Member{ID: strings.Repeat("x", MaxIDLen+1)}}, "master id"},
		{"ttl short", EtcdOptions{Client: cli, Self: Member{ID: "m"}, LeaseTTL: time.Second}, "lease TTL"},
		{"ttl long", EtcdOptions{Client: cli, Self: Member{ID: "m"}, LeaseTTL: time.Minute + time.Second}, "lease TTL"},
		{"ttl fraction", EtcdOptions{Client: cli, Self: Member{ID: "m"}, LeaseTTL: 2500 * time.Millisecond}, "lease TTL"},
		{"huge member", EtcdOptions{Client: cli, Self: Member{ID: "m", HTTPURL: strings.Repeat("h", maxMemberValue)}}, "registration larger"},
		{"bad prefix", EtcdOptions{Client: cli, Self: Member{ID: "m"}, Prefix: "sutra"}, "prefix"},
	} {
		err := tc.o.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzDecodeMember(f *testing.F) {
	f.Add("m1", []byte(`{"id":"m1","grpc_addr":"a:7000","leader":true}`))
	f.Add("m1", []byte(`{"id":"m2"}`))
	f.Add("", []byte(`{"id":""}`))
	f.Add("a/b", []byte(`{"id":"a/b"}`))
	f.Add("m", []byte(`{"id":"m","started":"not a time"}`))
	f.Add("m", []byte(`{"id":"m","version":`+strings.Repeat(`"x`, 3000)+`}`))
	f.Add("m", []byte(`null`))
	f.Add("m", []byte("\xff\xfe{"))
	f.Fuzz(func(t *testing.T, id string, value []byte) {
		m, err := decodeMember(id, value)
		if err != nil {
			return
		}
		if m.ID != id || m.Leader || ValidateID(id) != nil || len(value) > maxMemberValue {
			t.Fatalf("decodeMember(%q, %q) = %+v accepted", id, value, m)
		}
	})
}

func TestLeaderSurvivesEtcdMemberLoss(t *testing.T) {
	t.Parallel()
	ec := etcdtest.StartCluster(t, 3, etcdtest.Options{})
	const ttl = 5 * time.Second
	cs := []*Etcd{
		newCoord(t, newClient(t, ec.Endpoints()), "a", ttl, nil, nil),
		newCoord(t, newClient(t, ec.Endpoints()), "b", ttl, nil, nil),
	}
	l := oneLeader(t, cs, 10*time.Second)
	term, _, _ := l.Leadership()
	m := ec.Leader()
	if m == nil {
		t.Fatal("no etcd leader")
	}
	// Watch the leadership while the member stops (a graceful stop takes
	// seconds) and for 2 s after.
	var lost atomic.Value
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if got, leading, _ := l.Leadership(); !leading || got != term {
				lost.Store(fmt.Sprintf("term %d -> %d, leading %v", term, got, leading))
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	m.Stop()
	t.Logf("stopped the etcd leader %s in %s", m.Name, time.Since(start))
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	if v := lost.Load(); v != nil {
		t.Fatalf("master leader lost its leadership (%s) when one etcd member of three stopped", v)
	}
	ms, err := cs[0].Members(context.Background())
	if err != nil || len(ms) != 2 {
		t.Fatalf("Members with one etcd member down = %v, %v", ms, err)
	}
}
