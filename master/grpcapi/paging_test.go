package grpcapi

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/sutragrid/sutra/internal/limits"
	"github.com/sutragrid/sutra/master/fleet"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// registerN registers n agents a00000.. directly on the fleet, concurrently,
// each with nodesEach running nodes.
func (h *harness) registerN(t *testing.T, prefix string, n, nodesEach int, logLines []string) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				id := fmt.Sprintf("%s%05d", prefix, i)
				var nodes []fleet.NodeStatus
				for j := range nodesEach {
					nodes = append(nodes, fleet.NodeStatus{NodeID: fmt.Sprintf("%s-n%04d", id, j), State: fleet.NodeRunning, PID: int64(j + 1), LastLogLines: logLines})
				}
				_, err := h.f.Register(context.Background(), fleet.Registration{AgentID: id, Hostname: "h", Platform: "linux", Arch: "x86_64",
					MaxStorageNodes: uint32(nodesEach + 1), Nodes: nodes})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// allAgents pages through ListAgents and returns the ids in order.
func allAgents(t *testing.T, c gridv1.GridMasterClient, size uint32) (ids []string, pages int) {
	t.Helper()
	tok := ""
	for {
		resp, err := c.ListAgents(ctxT(t), &gridv1.ListAgentsRequest{PageSize: size, PageToken: tok})
		if err != nil {
			t.Fatalf("ListAgents(page %d) = %v", pages+1, err)
		}
		if n := proto.Size(resp); n > 4<<20 {
			t.Fatalf("ListAgents page %d is %d bytes: over the client's 4 MiB limit", pages+1, n)
		}
		pages++
		for _, a := range resp.GetAgents() {
			ids = append(ids, a.GetAgentId())
		}
		if resp.GetNextPageToken() == "" {
			return ids, pages
		}
		if pages > 10000 {
			t.Fatal("ListAgents never ends")
		}
		tok = resp.GetNextPageToken()
	}
}

// Issue 9 item 7: lists are paginated with a bounded default.
func TestListAgentsPaging(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.registerN(t, "a", 1250, 0, nil)

	first, err := h.client.ListAgents(ctx, &gridv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetAgents()) != fleet.DefaultPageSize || first.GetNextPageToken() == "" {
		t.Fatalf("ListAgents() = %d agents, next %q; want the default page of %d and a token", len(first.GetAgents()), first.GetNextPageToken(), fleet.DefaultPageSize)
	}
	big, err := h.client.ListAgents(ctx, &gridv1.ListAgentsRequest{PageSize: 1 << 31})
	if err != nil || len(big.GetAgents()) != fleet.MaxPageSize {
		t.Fatalf("ListAgents(page_size 2^31) = %d agents, %v; want clipped to %d", len(big.GetAgents()), err, fleet.MaxPageSize)
	}
	ids, pages := allAgents(t, h.client, 0)
	if len(ids) != 1250 || pages != 13 || !slices.IsSorted(ids) {
		t.Fatalf("paged through %d agents in %d pages (sorted %v); want 1250 in 13, sorted", len(ids), pages, slices.IsSorted(ids))
	}

	// Agents registered between two pages: nothing repeats or is skipped.
	p1, err := h.client.ListAgents(ctx, &gridv1.ListAgentsRequest{PageSize: 600})
	if err != nil {
		t.Fatal(err)
	}
	h.register(t, "a00000x", 1) // sorts inside the first page
	h.register(t, "z", 1)       // sorts after everything
	seen := map[string]int{}
	for _, a := range p1.GetAgents() {
		seen[a.GetAgentId()]++
	}
	tok := p1.GetNextPageToken()
	for tok != "" {
		resp, err := h.client.ListAgents(ctx, &gridv1.ListAgentsRequest{PageSize: 600, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.GetAgents() {
			seen[a.GetAgentId()]++
		}
		tok = resp.GetNextPageToken()
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("agent %s listed %d times", id, n)
		}
	}
	if len(seen) != 1251 || seen["z"] != 1 {
		t.Fatalf("listed %d agents (z: %d), want the 1250 plus z", len(seen), seen["z"])
	}

	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, bad := range []string{"!!!", "AAAA", b64("Nx\x00y\x00z"), b64("A../etc"), b64("E12"), strings.Repeat("A", 5000), b64("A")} {
		_, err := h.client.ListAgents(ctx, &gridv1.ListAgentsRequest{PageToken: bad})
		wantCode(t, fmt.Sprintf("ListAgents(token %.20q)", bad), err, codes.InvalidArgument, "page token")
	}
}

func TestListStorageNodesPaging(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.registerN(t, "a", 30, 10, nil)

	collect := func(agent string, size uint32) []string {
		var ids []string
		tok := ""
		for {
			resp, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: agent, PageSize: size, PageToken: tok})
			if err != nil {
				t.Fatalf("ListStorageNodes(%q) = %v", agent, err)
			}
			if size > 0 && len(resp.GetNodes()) > int(size) {
				t.Fatalf("ListStorageNodes page of %d nodes, asked for %d", len(resp.GetNodes()), size)
			}
			for _, n := range resp.GetNodes() {
				ids = append(ids, n.GetAgentId()+"/"+n.GetNodeId())
			}
			if tok = resp.GetNextPageToken(); tok == "" {
				return ids
			}
		}
	}
	first, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{})
	if err != nil || len(first.GetNodes()) != fleet.DefaultPageSize || first.GetNextPageToken() == "" {
		t.Fatalf("ListStorageNodes() = %d nodes, %v; want the default page of %d", len(first.GetNodes()), err, fleet.DefaultPageSize)
	}
	all := collect("", 0)
	if len(all) != 300 || !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != 300 {
		t.Fatalf("paged through %d nodes (sorted %v); want 300 distinct, sorted", len(all), slices.IsSorted(all))
	}
	if got := collect("a00007", 3); len(got) != 10 || got[0] != "a00007/a00007-n0000" {
		t.Fatalf("nodes of a00007 = %v, want its 10", got)
	}
	// A token is bound to its filter.
	p, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: "a00001", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: "a00002", PageToken: p.GetNextPageToken()})
	wantCode(t, "token of another filter", err, codes.InvalidArgument, "page token")
	_, err = h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{PageToken: p.GetNextPageToken()})
	wantCode(t, "token without its filter", err, codes.InvalidArgument, "page token")
	_, err = h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{PageToken: "%%%"})
	wantCode(t, "garbage token", err, codes.InvalidArgument, "page token")
}

// Issue 9 item 7 (and 6): an answer must never exceed the client's 4 MiB
// message limit, however much the agents report. Here ten agents report
// 300 nodes with 50 log lines each: about 15 MB in all, 1.5 MB per agent.
func TestListAnswersFitTheClientLimit(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	lines := make([]string, 50)
	for i := range lines {
		lines[i] = fmt.Sprintf("%03d %s", i, strings.Repeat("x", 96))
	}
	h.registerN(t, "big", 10, 300, lines)

	// The default client (4 MiB receive limit) pages through everything.
	ids, pages := allAgents(t, h.client, fleet.MaxPageSize)
	if len(ids) != 10 || pages < 2 {
		t.Fatalf("paged through %d agents in %d pages; want 10 in several pages", len(ids), pages)
	}
	total, tok := 0, ""
	for {
		resp, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{PageSize: fleet.MaxPageSize, PageToken: tok})
		if err != nil {
			t.Fatalf("ListStorageNodes = %v", err)
		}
		for _, n := range resp.GetNodes() {
			if len(n.GetStatus().GetLastLogLines()) != 50 {
				t.Fatalf("node %s listed with %d log lines, want 50", n.GetNodeId(), len(n.GetStatus().GetLastLogLines()))
			}
		}
		total += len(resp.GetNodes())
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if total != 3000 {
		t.Fatalf("listed %d nodes, want 3000", total)
	}
}

// Issue 10 item 11 over real gRPC: a second machine claiming a live
// agent's id is refused with both host names; a replacement of an offline
// one is accepted.
func TestRegisterInstanceIDOverGRPC(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	req := func(host, inst string) *gridv1.RegisterAgentRequest {
		return &gridv1.RegisterAgentRequest{AgentId: "web1", Hostname: host, Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 1, InstanceId: inst}
	}
	if _, err := h.client.RegisterAgent(ctx, req("alpha.lan", "3f1c9a")); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.RegisterAgent(ctx, req("beta.lan", "77e0d2"))
	wantCode(t, "second machine", err, codes.AlreadyExists, `agent id "web1" is already registered by host "alpha.lan" (instance 3f1c9a)`)
	wantCode(t, "second machine", err, codes.AlreadyExists, `this host "beta.lan" has a different instance id (77e0d2): set a unique agent_id in agent-config.toml`)
	// Old agents (no instance id) keep working.
	if _, err := h.client.RegisterAgent(ctx, req("alpha.lan", "")); err != nil {
		t.Fatalf("registration without instance id = %v", err)
	}
	_, err = h.client.RegisterAgent(ctx, req("alpha.lan", "bad id"))
	wantCode(t, "bad instance id", err, codes.InvalidArgument, "instance id")
	// The first machine goes away: the replacement is accepted.
	h.clock.Advance(31e9)
	if err := h.f.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.RegisterAgent(ctx, req("beta.lan", "77e0d2")); err != nil {
		t.Fatalf("replacement of an offline agent = %v", err)
	}
	a, err := h.client.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "web1"})
	if err != nil || a.GetHostname() != "beta.lan" {
		t.Fatalf("GetAgent = %v, %v; want beta.lan", a, err)
	}
	_, err = h.client.RegisterAgent(ctx, req("alpha.lan", "3f1c9a"))
	wantCode(t, "old machine back", err, codes.AlreadyExists, `registered by host "beta.lan"`)
}

// Issue 9 item 15 over gRPC: a live agent is removed only with force.
func TestUnregisterAgentForce(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.register(t, "a1", 1)
	_, err := h.client.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: "a1"})
	wantCode(t, "UnregisterAgent(healthy)", err, codes.FailedPrecondition, "is healthy")
	h.clock.Advance(31e9)
	if err := h.f.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: "a1"}); err != nil {
		t.Fatalf("UnregisterAgent(offline) = %v", err)
	}
	_, err = h.client.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: "a1"})
	wantCode(t, "GetAgent after unregister", err, codes.NotFound, "")
}

// The largest agents the limits allow (1000 nodes, every field at its
// limit) still list: a page never exceeds the client's 4 MiB limit.
func TestListWorstCaseAgentsFit(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	line := strings.Repeat("l", limits.MaxLogLineLen)
	version := "1.2.3-" + strings.Repeat("r", limits.MaxVersionLen-6)
	for a := range 3 {
		id := fmt.Sprintf("%s%d", strings.Repeat("a", fleet.MaxIDLen-1), a)
		var nodes []*gridv1.NodeStatus
		for i := range limits.MaxNodesPerAgent {
			nodes = append(nodes, &gridv1.NodeStatus{
				NodeId: fmt.Sprintf("%d-%04d-%s", a, i, strings.Repeat("n", fleet.MaxIDLen-7)), State: gridv1.NodeState_NODE_STATE_FAILED,
				Pid: limits.MaxPID, Endpoint: strings.Repeat("e", limits.MaxTextLen), Version: version,
				RestartCount: limits.MaxRestartCount, LastExit: strings.Repeat("x", limits.MaxTextLen),
				Message: strings.Repeat("m", limits.MaxMessageLen), SinceUnix: 1, LastLogLines: []string{line, line, line},
			})
		}
		req := &gridv1.RegisterAgentRequest{AgentId: id, Hostname: strings.Repeat("h", limits.MaxTextLen), Platform: "linux", Arch: "x86_64",
			AgentVersion: version, MaxStorageNodes: limits.MaxStorageNodes, Nodes: nodes}
		if _, err := h.client.RegisterAgent(ctx, req); err != nil {
			t.Fatalf("RegisterAgent(%d bytes) = %v", proto.Size(req), err)
		}
	}
	ids, _ := allAgents(t, h.client, fleet.MaxPageSize)
	if len(ids) != 3 {
		t.Fatalf("listed %d agents, want 3", len(ids))
	}
	tok, total := "", 0
	for {
		resp, err := h.client.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{PageSize: fleet.MaxPageSize, PageToken: tok})
		if err != nil {
			t.Fatalf("ListStorageNodes = %v", err)
		}
		total += len(resp.GetNodes())
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if total != 3*limits.MaxNodesPerAgent {
		t.Fatalf("listed %d nodes, want %d", total, 3*limits.MaxNodesPerAgent)
	}
}
