package master_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Issue 12: every enrollment, renewal, revocation, token change and
// operator action is an event naming who did it — in the gRPC event
// stream and in GET /api/events.
func TestEventsNameTheirActor(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var console testutil.SyncBuffer
	addrs, _ := runMaster(t, data, &console)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op := operatorClient(t, data, addrs.GRPC)
	const opActor = "operator@127.0.0.1"

	tok := joinToken(t, ctx, op, 2)
	a1, err := enrollAgentAs(t, ctx, addrs.GRPC, tok, "a1", "host-one")
	if err != nil {
		t.Fatal(err)
	}
	if err := a1.register(ctx); err != nil {
		t.Fatal(err)
	}
	sp, err := op.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{NodeId: sp.GetNode().GetNodeId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.SetDesiredVersion(ctx, &gridv1.SetDesiredVersionRequest{AgentId: "a1", StorageServerVersion: "1.2.3"}); err != nil {
		t.Fatal(err)
	}
	key, _ := mtls.NewKey()
	csr, err := mtls.NewCSR(key, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a1.rpc.RenewCertificate(ctx, &gridv1.RenewCertificateRequest{AgentId: "a1", CsrDer: csr}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.RevokeAgent(ctx, &gridv1.RevokeAgentRequest{AgentId: "a1", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: "a1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: "a1", Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.RemoveJoinToken(ctx, &gridv1.RemoveJoinTokenRequest{Id: tok.ID}); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"JoinTokenCreated":   opActor,
		"AgentEnrolled":      "token:" + tok.ID,
		"AgentRegistered":    "agent:a1",
		"NodeSpawnRequested": opActor,
		"NodeStopRequested":  opActor,
		"DesiredVersionSet":  opActor,
		"CertificateRenewed": "agent:a1",
		"AgentRevoked":       opActor,
		"AgentUnrevoked":     opActor,
		"AgentUnregistered":  opActor,
		"JoinTokenRemoved":   opActor,
	}

	// gRPC.
	stream, err := op.WatchEvents(ctx, &gridv1.WatchEventsRequest{Tail: 1000, NoFollow: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for {
		e, err := stream.Recv()
		if err != nil {
			break
		}
		if e.GetActor() == "" {
			t.Errorf("event %d %s has no actor", e.GetSeq(), e.GetType())
		}
		if _, ok := want[e.GetType()]; ok {
			got[e.GetType()] = e.GetActor()
		}
	}
	for typ, w := range want {
		if got[typ] != w {
			t.Errorf("WatchEvents: %s actor = %q, want %q", typ, got[typ], w)
		}
	}

	// HTTP.
	creds, _ := opauth.Load(data)
	var events []struct {
		Type  string `json:"type"`
		Actor string `json:"actor"`
	}
	httpGetJSON(t, "http://"+addrs.HTTP+"/api/events?limit=1000", creds.Token, &events)
	gotHTTP := map[string]string{}
	for _, e := range events {
		if _, ok := want[e.Type]; ok {
			gotHTTP[e.Type] = e.Actor
		}
	}
	for typ, w := range want {
		if gotHTTP[typ] != w {
			t.Errorf("GET /api/events: %s actor = %q, want %q", typ, gotHTTP[typ], w)
		}
	}
}

// Issue 12: of N machines enrolling under one new agent id at once with a
// multi-use join token, exactly one gets a certificate; the others get
// ALREADY_EXISTS and spend no use of the token.
func TestConcurrentEnrollOneID(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var console testutil.SyncBuffer
	addrs, _ := runMaster(t, data, &console)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op := operatorClient(t, data, addrs.GRPC)
	tok := joinToken(t, ctx, op, 100)

	const n = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		key, err := mtls.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			<-start
			_, errs[i] = enroll.Enroll(ctx, enroll.Request{Addr: addrs.GRPC, Token: tok, AgentID: "same", Hostname: "machine-" + string(rune('a'+i)), Key: key})
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, enroll.ErrIDInUse) || status.Code(errors.Unwrap(err)) == codes.AlreadyExists || strings.Contains(err.Error(), "AlreadyExists"):
		default:
			t.Errorf("enrollment %d = %v, want success or ALREADY_EXISTS", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent enrollments under one id succeeded, want exactly 1: %v", ok, n, errs)
	}
	list, err := op.ListJoinTokens(ctx, &gridv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, jt := range list.GetTokens() {
		if jt.GetId() == tok.ID && jt.GetUsed() != 1 {
			t.Errorf("join token used %d times, want 1 (refused enrollments spend nothing)", jt.GetUsed())
		}
	}
	stream, err := op.WatchEvents(ctx, &gridv1.WatchEventsRequest{Tail: 1000, NoFollow: true})
	if err != nil {
		t.Fatal(err)
	}
	enrolled := 0
	for {
		e, err := stream.Recv()
		if err != nil {
			break
		}
		if e.GetType() == "AgentEnrolled" {
			enrolled++
		}
	}
	if enrolled != 1 {
		t.Errorf("%d AgentEnrolled events, want 1", enrolled)
	}
}
