package grpcapi

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/auth"
	"github.com/sutragrid/sutra/master/fleet"
	"github.com/sutragrid/sutra/master/pki"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/tokens"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

const testOperatorToken = "operator-token-for-tests-0123456789"

// tlsMaster is a fleet served over mutual TLS with the auth interceptors,
// composed as package master composes them.
type tlsMaster struct {
	addr  string
	pki   *pki.PKI
	f     *fleet.Fleet
	clock *testutil.Clock
	st    store.Store
	stop  func()
}

func startTLS(t *testing.T, dir string) *tlsMaster {
	t.Helper()
	st, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewClock(time.Now())
	f, err := fleet.New(context.Background(), fleet.Options{Store: st, Clock: clock, MasterVersion: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pki.Open(pki.Options{Dir: dir + "/tls", Hostname: "master.test"})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tokens.New(tokens.Options{Store: st, Fingerprint: p.Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := auth.NewPolicy(testOperatorToken)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(p.ServerTLSConfig())),
		grpc.ChainUnaryInterceptor(pol.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(pol.StreamServerInterceptor()))
	New(f, nil).WithTrust(Trust{PKI: p, Tokens: tk, Now: clock.Now, Store: st}).Register(g)
	go func() { _ = g.Serve(lis) }()
	m := &tlsMaster{addr: lis.Addr().String(), pki: p, f: f, clock: clock, st: st}
	stopped := false
	m.stop = func() {
		if !stopped {
			stopped = true
			g.Stop()
			_ = st.Close()
		}
	}
	t.Cleanup(m.stop)
	return m
}

func dial(t *testing.T, addr string, cfg *tls.Config) gridv1.GridMasterClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return gridv1.NewGridMasterClient(conn)
}

func (m *tlsMaster) operator(t *testing.T) gridv1.GridMasterClient {
	return dial(t, m.addr, pki.ClientTLSConfig(m.pki.Roots(), nil))
}

func asOperator(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testOperatorToken)
}

func (m *tlsMaster) createToken(t *testing.T, uses uint32, ttl time.Duration) jointoken.Token {
	t.Helper()
	resp, err := m.operator(t).CreateJoinToken(asOperator(ctxT(t)), &gridv1.CreateJoinTokenRequest{Uses: uses, TtlSecs: int64(ttl / time.Second)})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	tok, err := jointoken.Parse(resp.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// enroll does what an agent does: fetch the CA bundle without verifying,
// check it against the token's pin, then send the secret over a connection
// verified against the pinned CA. It returns the agent's TLS config.
func enroll(t *testing.T, addr string, tok jointoken.Token, agentID string) (*tls.Config, error) {
	t.Helper()
	anon := dial(t, addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // checked against the pin below
	bundle, err := anon.CABundle(ctxT(t), &gridv1.CABundleRequest{})
	if err != nil {
		return nil, err
	}
	roots, _, err := mtls.PinnedRoots(bundle.GetCaBundlePem(), tok.Fingerprint)
	if err != nil {
		return nil, err
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := mtls.NewCSR(key, agentID)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := dial(t, addr, mtls.ClientConfig(roots, nil)).Enroll(ctxT(t), &gridv1.EnrollRequest{
		TokenId: tok.ID, TokenSecret: secretField(tok), CsrDer: csr, AgentId: agentID, Hostname: "host-" + agentID,
	})
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{Certificate: resp.GetCertChainDer(), PrivateKey: key}
	return mtls.ClientConfig(roots, cert), nil
}

// secretField is the secret as the token string carries it.
func secretField(tok jointoken.Token) string {
	parts := strings.Split(tok.String(), ".")
	return parts[len(parts)-1]
}

func registerReq(id string) *gridv1.RegisterAgentRequest {
	return &gridv1.RegisterAgentRequest{AgentId: id, Hostname: "host-" + id, Platform: "linux", Arch: "x86_64", AgentVersion: "0.1.0", MaxStorageNodes: 2}
}

func TestTrustRules(t *testing.T) {
	m := startTLS(t, t.TempDir())
	tok := m.createToken(t, 2, time.Hour)
	cfgA, err := enroll(t, m.addr, tok, "agent-a")
	if err != nil {
		t.Fatalf("enroll agent-a: %v", err)
	}
	cfgB, err := enroll(t, m.addr, tok, "agent-b")
	if err != nil {
		t.Fatalf("enroll agent-b: %v", err)
	}
	a, b := dial(t, m.addr, cfgA), dial(t, m.addr, cfgB)
	if _, err := a.RegisterAgent(ctxT(t), registerReq("agent-a")); err != nil {
		t.Fatalf("agent-a registers as itself: %v", err)
	}
	if _, err := b.RegisterAgent(ctxT(t), registerReq("agent-b")); err != nil {
		t.Fatalf("agent-b registers as itself: %v", err)
	}
	op := m.operator(t)

	t.Run("plaintext refused", func(t *testing.T) {
		_, err := dial(t, m.addr, nil).ListAgents(asOperator(ctxT(t)), &gridv1.ListAgentsRequest{})
		wantCode(t, "ListAgents over plaintext", err, codes.Unavailable, "")
	})
	t.Run("no token", func(t *testing.T) {
		_, err := op.ListAgents(ctxT(t), &gridv1.ListAgentsRequest{})
		wantCode(t, "ListAgents without a token", err, codes.Unauthenticated, "SUTRA_TOKEN")
		_, err = op.RegisterAgent(ctxT(t), registerReq("agent-a"))
		wantCode(t, "RegisterAgent without a certificate", err, codes.Unauthenticated, "join token")
	})
	t.Run("wrong token", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+strings.Repeat("x", len(testOperatorToken)))
		_, err := op.ListAgents(ctx, &gridv1.ListAgentsRequest{})
		wantCode(t, "ListAgents with a wrong token", err, codes.Unauthenticated, "wrong")
	})
	t.Run("operator token", func(t *testing.T) {
		resp, err := op.ListAgents(asOperator(ctxT(t)), &gridv1.ListAgentsRequest{})
		if err != nil || len(resp.GetAgents()) != 2 {
			t.Fatalf("ListAgents with the token = %d agents, %v; want 2, nil", len(resp.GetAgents()), err)
		}
	})
	t.Run("agent cert on operator RPC", func(t *testing.T) {
		_, err := a.ListAgents(ctxT(t), &gridv1.ListAgentsRequest{})
		wantCode(t, "ListAgents with an agent certificate", err, codes.PermissionDenied, "agent-a")
		// Even with the operator token besides: the certificate says agent.
		_, err = a.UnregisterAgent(asOperator(ctxT(t)), &gridv1.UnregisterAgentRequest{AgentId: "agent-b", Force: true})
		wantCode(t, "UnregisterAgent with an agent certificate", err, codes.PermissionDenied, "")
		stream, err := a.WatchEvents(ctxT(t), &gridv1.WatchEventsRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, "WatchEvents with an agent certificate", err, codes.PermissionDenied, "")
	})
	t.Run("operator token on agent RPC", func(t *testing.T) {
		_, err := op.Heartbeat(asOperator(ctxT(t)), &gridv1.HeartbeatRequest{AgentId: "agent-a"})
		wantCode(t, "Heartbeat with the operator token", err, codes.PermissionDenied, "cannot act as an agent")
	})
	t.Run("heartbeat as another agent", func(t *testing.T) {
		_, err := a.Heartbeat(ctxT(t), &gridv1.HeartbeatRequest{AgentId: "agent-b"})
		wantCode(t, "agent-a heartbeats as agent-b", err, codes.PermissionDenied, `authenticated as agent "agent-a"`)
		_, err = a.RegisterAgent(ctxT(t), registerReq("agent-b"))
		wantCode(t, "agent-a registers as agent-b", err, codes.PermissionDenied, "")
		if _, err := a.Heartbeat(ctxT(t), &gridv1.HeartbeatRequest{AgentId: "agent-a"}); err != nil {
			t.Fatalf("agent-a heartbeats as itself: %v", err)
		}
	})
	t.Run("token used up", func(t *testing.T) {
		_, err := enroll(t, m.addr, tok, "agent-c")
		wantCode(t, "third enrollment with a 2-use token", err, codes.Unauthenticated, "join token refused")
	})
	t.Run("single-use token used twice", func(t *testing.T) {
		one := m.createToken(t, 1, time.Hour)
		if _, err := enroll(t, m.addr, one, "agent-d"); err != nil {
			t.Fatalf("first use: %v", err)
		}
		_, err := enroll(t, m.addr, one, "agent-e")
		wantCode(t, "second use of a single-use token", err, codes.Unauthenticated, "join token refused")
	})
	t.Run("expired token", func(t *testing.T) {
		exp := m.createToken(t, 5, time.Minute)
		m.clock.Advance(2 * time.Minute)
		_, err := enroll(t, m.addr, exp, "agent-f")
		wantCode(t, "enrollment with an expired token", err, codes.Unauthenticated, "join token refused")
	})
	t.Run("alive id refused", func(t *testing.T) {
		more := m.createToken(t, 1, time.Hour)
		// agent-a heartbeats at the fake clock's now: alive.
		if _, err := a.Heartbeat(ctxT(t), &gridv1.HeartbeatRequest{AgentId: "agent-a"}); err != nil {
			t.Fatal(err)
		}
		_, err := enroll(t, m.addr, more, "agent-a")
		wantCode(t, "enrolling a second machine as agent-a", err, codes.AlreadyExists, `"host-agent-a"`)
		// The refusal did not spend the token.
		if _, err := enroll(t, m.addr, more, "agent-g"); err != nil {
			t.Fatalf("the token after an ALREADY_EXISTS refusal: %v", err)
		}
	})
	t.Run("renew", func(t *testing.T) {
		key, _ := mtls.NewKey()
		csr, _ := mtls.NewCSR(key, "agent-a")
		resp, err := a.RenewCertificate(ctxT(t), &gridv1.RenewCertificateRequest{AgentId: "agent-a", CsrDer: csr})
		if err != nil {
			t.Fatalf("RenewCertificate: %v", err)
		}
		renewed := mtls.ClientConfig(m.pki.Roots(), &tls.Certificate{Certificate: resp.GetCertChainDer(), PrivateKey: key})
		if _, err := dial(t, m.addr, renewed).Heartbeat(ctxT(t), &gridv1.HeartbeatRequest{AgentId: "agent-a"}); err != nil {
			t.Fatalf("heartbeat with the renewed certificate: %v", err)
		}
		_, err = a.RenewCertificate(ctxT(t), &gridv1.RenewCertificateRequest{AgentId: "agent-b", CsrDer: csr})
		wantCode(t, "agent-a renews agent-b's certificate", err, codes.PermissionDenied, "")
		_, err = op.RenewCertificate(asOperator(ctxT(t)), &gridv1.RenewCertificateRequest{AgentId: "agent-a", CsrDer: csr})
		wantCode(t, "the operator renews an agent's certificate", err, codes.PermissionDenied, "")
	})
	t.Run("tokens listed without secrets and removed", func(t *testing.T) {
		list, err := op.ListJoinTokens(asOperator(ctxT(t)), &gridv1.ListJoinTokensRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetTokens()) < 1 || list.GetTokens()[0].GetId() == "" {
			t.Fatalf("ListJoinTokens = %v", list.GetTokens())
		}
		if strings.Contains(list.String(), secretField(tok)) {
			t.Fatal("ListJoinTokens shows a secret")
		}
		if _, err := op.RemoveJoinToken(asOperator(ctxT(t)), &gridv1.RemoveJoinTokenRequest{Id: tok.ID}); err != nil {
			t.Fatalf("RemoveJoinToken: %v", err)
		}
		_, err = op.RemoveJoinToken(asOperator(ctxT(t)), &gridv1.RemoveJoinTokenRequest{Id: tok.ID})
		wantCode(t, "removing it again", err, codes.NotFound, "")
		_, err = a.CreateJoinToken(ctxT(t), &gridv1.CreateJoinTokenRequest{})
		wantCode(t, "an agent creates a token", err, codes.PermissionDenied, "")
	})
	t.Run("events name the token", func(t *testing.T) {
		found := false
		for _, e := range m.f.Events(0, 0) {
			if e.Type == fleet.EventAgentEnrolled && e.AgentID == "agent-a" && strings.Contains(e.Message, tok.ID) {
				found = true
			}
		}
		if !found {
			t.Fatalf("no %s event for agent-a naming token %s in %v", fleet.EventAgentEnrolled, tok.ID, m.f.Events(0, 0))
		}
	})
}

// TestEnrollWrongPin: a token pinned to another master's CA is refused
// before its secret is sent: the agent never calls Enroll.
func TestEnrollWrongPin(t *testing.T) {
	m1 := startTLS(t, t.TempDir())
	m2 := startTLS(t, t.TempDir())
	tok := m1.createToken(t, 1, time.Hour)
	_, err := enroll(t, m2.addr, tok, "agent-a")
	if !errors.Is(err, mtls.ErrPinMismatch) {
		t.Fatalf("enroll at another master = %v, want ErrPinMismatch", err)
	}
	for _, fp := range []string{m1.pki.Fingerprint(), m2.pki.Fingerprint()} {
		if !strings.Contains(err.Error(), fp) {
			t.Errorf("error %q does not name fingerprint %s", err, fp)
		}
	}
	for _, e := range m2.f.Events(0, 0) {
		if e.Type == fleet.EventAgentEnrolled {
			t.Fatalf("the other master saw an enrollment: %v", e)
		}
	}
	// The token is still good at its own master.
	if _, err := enroll(t, m1.addr, tok, "agent-a"); err != nil {
		t.Fatalf("enroll at the token's master: %v", err)
	}
}

// TestRestartKeepsIdentities: after a master restart on the same data dir
// the CA, the agents' certificates and the operator's trust still hold.
func TestRestartKeepsIdentities(t *testing.T) {
	dir := t.TempDir()
	m := startTLS(t, dir)
	tok := m.createToken(t, 1, time.Hour)
	cfg, err := enroll(t, m.addr, tok, "agent-a")
	if err != nil {
		t.Fatal(err)
	}
	fp := m.pki.Fingerprint()
	m.stop()
	m2 := startTLS(t, dir)
	if m2.pki.Fingerprint() != fp {
		t.Fatalf("CA fingerprint after restart = %s, want %s", m2.pki.Fingerprint(), fp)
	}
	if _, err := dial(t, m2.addr, cfg).RegisterAgent(ctxT(t), registerReq("agent-a")); err != nil {
		t.Fatalf("agent-a with its certificate after restart: %v", err)
	}
	_, err = enroll(t, m2.addr, tok, "agent-b")
	wantCode(t, "the used single-use token after restart", err, codes.Unauthenticated, "join token refused")
}

// An enrollment claim guards an id only until the agent registers; then it
// is removed, so the store does not keep one record per id ever enrolled.
func TestEnrollmentClaimRemovedOnRegistration(t *testing.T) {
	m := startTLS(t, t.TempDir())
	tok := m.createToken(t, 1, time.Hour)
	cfg, err := enroll(t, m.addr, tok, "claimed")
	if err != nil {
		t.Fatal(err)
	}
	claim, _, err := m.st.Get(ctxT(t), store.TableMeta, enrollKey("claimed"))
	if err != nil || claim == nil {
		t.Fatalf("after Enroll the claim is %q, %v; want a record", claim, err)
	}
	if _, err := dial(t, m.addr, cfg).RegisterAgent(ctxT(t), registerReq("claimed")); err != nil {
		t.Fatal(err)
	}
	claim, _, err = m.st.Get(ctxT(t), store.TableMeta, enrollKey("claimed"))
	if err != nil || claim != nil {
		t.Fatalf("after RegisterAgent the claim is %q, %v; want it removed", claim, err)
	}
}
