package master_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/controlplane"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// panicker is a test-only gRPC service whose handlers panic, registered on
// the master's real server next to the control plane.
var panicker = grpc.ServiceDesc{
	ServiceName: "sutra.test.Panicker",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(emptypb.Empty)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) { panic("unary handler bug") }
			if in == nil {
				return h(ctx, req)
			}
			return in(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/sutra.test.Panicker/Unary"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler: func(any, grpc.ServerStream) error {
			var m map[string]int
			m["x"]++ // nil map write: a runtime panic, not a panic(...) call
			return nil
		},
	}},
}

type runningMaster struct {
	addr string
	conn *grpc.ClientConn
	grid gridv1.GridMasterClient
	logs *testutil.SyncBuffer
	done chan error
}

// startMaster runs the real master (control plane included, plus the
// panicker service) on loopback ports.
func startMaster(t *testing.T, mod func(*master.Options)) *runningMaster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	logs := &testutil.SyncBuffer{}
	ready := make(chan master.Addrs, 1)
	o := master.Options{
		HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: dir + "/bin", DataDir: dir + "/data",
		ShutdownTimeout: 5 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(logs, nil)),
		Ready:           func(a master.Addrs) { ready <- a },
		ControlPlane:    controlplane.Options{MaxWatchers: 2},
	}
	master.RegisterTestService(&o, &panicker)
	if mod != nil {
		mod(&o)
	}
	m := &runningMaster{logs: logs, done: make(chan error, 1)}
	go func() { m.done <- master.Run(ctx, o) }()
	var addrs master.Addrs
	select {
	case addrs = <-ready:
	case err := <-m.done:
		t.Fatalf("master.Run returned before ready: %v\n%s", err, logs)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	creds, err := opauth.Load(o.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := creds.Dial(addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	m.conn, m.grid, m.addr = conn, gridv1.NewGridMasterClient(conn), addrs.GRPC
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		select {
		case err := <-m.done:
			if err != nil {
				t.Errorf("master.Run = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("master did not stop within 30s")
		}
	})
	return m
}

// agent enrolls agent id with a new join token and returns its client.
func (m *runningMaster) agent(t *testing.T, id string) gridv1.GridMasterClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, err := m.grid.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(created.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	res, err := enroll.Enroll(ctx, enroll.Request{Addr: m.addr, Token: tok, AgentID: id, Hostname: "host-" + id, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(credentials.NewTLS(res.TLSConfig(key))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return gridv1.NewGridMasterClient(conn)
}

func (m *runningMaster) alive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.grid.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{}); err != nil {
		t.Fatalf("master is not answering any more: %v", err)
	}
	select {
	case err := <-m.done:
		t.Fatalf("master.Run returned: %v", err)
	default:
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if st, _ := status.FromError(err); st.Code() != code {
		t.Fatalf("%s: %v, want %v", what, err, code)
	}
}

// Issue 9 item 1: a panic in any handler, unary or streaming, answers
// INTERNAL with the stack in the log, and the master keeps serving.
func TestHandlerPanicAnswersInternal(t *testing.T) {
	m := startMaster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 3 {
		err := m.conn.Invoke(ctx, "/sutra.test.Panicker/Unary", &emptypb.Empty{}, &emptypb.Empty{})
		wantCode(t, "unary handler that panics", err, codes.Internal)
		m.alive(t)
	}
	s, err := m.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/sutra.test.Panicker/Stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	wantCode(t, "stream handler that panics", s.RecvMsg(&emptypb.Empty{}), codes.Internal)
	m.alive(t)
	logs := m.logs.String()
	for _, want := range []string{"panic in gRPC handler", "unary handler bug", "/sutra.test.Panicker/Unary", "assignment to entry in nil map", "grpcserver_test.go"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q (the panic and its stack):\n%s", want, logs)
		}
	}
}

// Issue 9 item 1, end to end on the real master: RegisterAgent and
// Heartbeat with a time in year 10000 used to kill the process.
func TestYear10000DoesNotKillTheMaster(t *testing.T) {
	m := startMaster(t, nil)
	a1 := m.agent(t, "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := func(n *gridv1.NodeStatus, u *gridv1.UpgradeStatus) error {
		req := &gridv1.RegisterAgentRequest{AgentId: "a1", Hostname: "h1", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 2, Upgrade: u}
		if n != nil {
			req.Nodes = []*gridv1.NodeStatus{n}
		}
		_, err := a1.RegisterAgent(ctx, req)
		return err
	}
	const year10000 = 253402300800
	wantCode(t, "RegisterAgent with node since year 10000", reg(&gridv1.NodeStatus{NodeId: "n1", State: gridv1.NodeState_NODE_STATE_RUNNING, SinceUnix: year10000}, nil), codes.InvalidArgument)
	m.alive(t)
	wantCode(t, "RegisterAgent with upgrade updated year 10000", reg(nil, &gridv1.UpgradeStatus{Phase: "downloading", UpdatedUnix: year10000}), codes.InvalidArgument)
	m.alive(t)
	if err := reg(nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err := a1.Heartbeat(ctx, &gridv1.HeartbeatRequest{AgentId: "a1", Nodes: []*gridv1.NodeStatus{{NodeId: "n1", State: gridv1.NodeState_NODE_STATE_RUNNING, SinceUnix: year10000}}})
	wantCode(t, "Heartbeat with node since year 10000", err, codes.InvalidArgument)
	m.alive(t)
}

// Issue 9 item 8: a message over the receive limit is refused before any
// handler runs; with GRPCMaxConcurrentStreams 2, a third call on the same
// connection waits for a free stream instead of being served at once.
func TestGRPCServerBounds(t *testing.T) {
	m := startMaster(t, func(o *master.Options) { o.GRPCMaxConcurrentStreams = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := m.grid.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{StorageServerVersion: "1.0.0-" + strings.Repeat("a", 5<<20)})
	wantCode(t, "a 5 MB SetDesiredVersion", err, codes.ResourceExhausted)
	_, err = m.grid.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{StorageServerVersion: "1.0.0-" + strings.Repeat("a", 3<<20)})
	wantCode(t, "a 3 MB SetDesiredVersion", err, codes.InvalidArgument)
	m.alive(t)

	// Two following watchers fill both streams of the connection.
	wctx, wcancel := context.WithCancel(ctx)
	for range 2 {
		s, err := m.grid.WatchEvents(wctx, &gridv1.WatchEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				if _, err := s.Recv(); err != nil {
					return
				}
			}
		}()
	}
	// Give the server time to see both streams; then a third call waits.
	time.Sleep(200 * time.Millisecond)
	short, scancel := context.WithTimeout(ctx, time.Second)
	_, err = m.grid.GetClusterStatus(short, &gridv1.GetClusterStatusRequest{})
	scancel()
	wantCode(t, "a third call while two streams are open", err, codes.DeadlineExceeded)
	wcancel()
	m.alive(t)
}
