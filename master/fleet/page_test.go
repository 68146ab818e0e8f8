package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestListEventsPaging(t *testing.T) {
	e := newGCEnv(t, 0)
	registerMany(t, e.f, "a", 250) // 250 × AgentRegistered, NodeAdopted, NodeRunning
	var seqs []uint64
	pages := 0
	p := Page{Size: 0}
	for {
		pg, err := e.f.ListEvents(0, p)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, ev := range pg.Events {
			seqs = append(seqs, ev.Seq)
		}
		if pg.NextToken == "" {
			break
		}
		p.Token = pg.NextToken
	}
	if len(seqs) != 750 || pages != 8 || seqs[0] != 1 || seqs[749] != 750 {
		t.Fatalf("paged through %d events in %d pages (%d..%d); want 750 in 8, 1..750", len(seqs), pages, seqs[0], seqs[len(seqs)-1])
	}
	pg, err := e.f.ListEvents(745, Page{Size: 3})
	if err != nil || len(pg.Events) != 3 || pg.Events[0].Seq != 746 || pg.NextToken == "" {
		t.Fatalf("ListEvents(since 745, 3) = %+v, %v", pg, err)
	}
	pg, err = e.f.ListEvents(0, Page{Size: 10, Token: pg.NextToken})
	if err != nil || len(pg.Events) != 2 || pg.Events[0].Seq != 749 || pg.NextToken != "" {
		t.Fatalf("next page = %+v, %v; want 749, 750 and no token", pg, err)
	}
	agentsPage, _ := e.f.ListAgents(Page{Size: 1})
	for _, tok := range []string{"x", agentsPage.NextToken, encodeToken(tokEvents, "-1"), encodeToken(tokEvents, "1", "2"), strings.Repeat("R", 2000)} {
		if _, err := e.f.ListEvents(0, Page{Token: tok}); !errors.Is(err, ErrInvalid) {
			t.Errorf("ListEvents(token %.20q) = %v, want ErrInvalid", tok, err)
		}
	}
}

// One agent whose report alone is over the page budget is listed without
// its log lines rather than making an answer no client can receive.
func TestListAgentsTrimsAnOversizedAgent(t *testing.T) {
	e := newEnv(t)
	lines := make([]string, maxLogLines)
	for i := range lines {
		lines[i] = strings.Repeat("y", 200)
	}
	var nodes []NodeStatus
	for i := range 300 {
		nodes = append(nodes, NodeStatus{NodeID: fmt.Sprintf("n%03d", i), State: NodeRunning, LastLogLines: lines})
	}
	if _, err := e.f.Register(context.Background(), Registration{AgentID: "huge", Platform: "linux", Arch: "x86_64", MaxStorageNodes: 300, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	e.register("small", 1)
	full, _ := e.f.Agent("huge")
	if agentSize(&full) <= MaxPageBytes {
		t.Fatalf("test agent is only %d bytes: make it bigger than %d", agentSize(&full), MaxPageBytes)
	}
	p, err := e.f.ListAgents(Page{})
	if err != nil || len(p.Agents) != 1 || p.Agents[0].ID != "huge" || p.NextToken == "" {
		t.Fatalf("first page = %d agents, %v, next %q; want huge alone", len(p.Agents), err, p.NextToken)
	}
	if got := agentSize(&p.Agents[0]); got > MaxPageBytes || len(p.Agents[0].Nodes) != 300 || p.Agents[0].Nodes[0].LastLogLines != nil {
		t.Fatalf("listed huge agent: %d bytes, %d nodes; want its 300 nodes without log lines", got, len(p.Agents[0].Nodes))
	}
	if a, _ := e.f.Agent("huge"); len(a.Nodes[0].LastLogLines) != maxLogLines {
		t.Fatal("trimming the listed copy changed the agent's record")
	}
	p, err = e.f.ListAgents(Page{Token: p.NextToken})
	if err != nil || len(p.Agents) != 1 || p.Agents[0].ID != "small" || p.NextToken != "" {
		t.Fatalf("second page = %+v, %v; want small alone and no token", p, err)
	}
}
