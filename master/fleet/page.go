package fleet

import (
	"encoding/base64"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Paging of the agent, node and event lists.
//
// A page token is opaque to clients: the base64url encoding of a kind byte,
// the list's filter (for nodes) and the sort key of the last item returned.
// The next page starts strictly after that key, so items inserted or removed
// between two calls never make a page repeat or skip an item that existed
// throughout. A page holds at most Page.Size items and at most MaxPageBytes
// of estimated encoded size, so that no answer can reach the 4 MiB message
// limit of a gRPC client, whatever the agents report.
const (
	// DefaultPageSize is the page size when the caller gives none.
	DefaultPageSize = 100
	// MaxPageSize is the largest page size honoured; larger sizes are clipped.
	MaxPageSize = 1000
	// MaxPageBytes bounds the estimated encoded size of one page (protobuf
	// or JSON without escapes), half of gRPC's default 4 MiB client limit.
	MaxPageBytes = 2 << 20
	// maxTokenLen bounds a page token, in bytes of its text form.
	maxTokenLen = 1024
)

// Page selects one page of a list.
type Page struct {
	// Size is the most items to return: 0 means DefaultPageSize, and sizes
	// above MaxPageSize are clipped to it.
	Size int
	// Token is the NextToken of the previous page; empty for the first page.
	Token string
}

func (p Page) size() int {
	switch {
	case p.Size <= 0:
		return DefaultPageSize
	case p.Size > MaxPageSize:
		return MaxPageSize
	}
	return p.Size
}

const (
	tokAgents = 'A'
	tokNodes  = 'N'
	tokEvents = 'E'
)

func encodeToken(kind byte, parts ...string) string {
	b := []byte{kind}
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func badToken() error {
	return newErr(KindInvalid, "page token is not one this master issued for this list: start again without a page token")
}

// decodeToken returns the parts of a token of the given kind.
func decodeToken(tok string, kind byte, nparts int) ([]string, error) {
	if len(tok) > maxTokenLen {
		return nil, badToken()
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 1 || b[0] != kind {
		return nil, badToken()
	}
	parts := strings.Split(string(b[1:]), "\x00")
	if len(parts) != nparts {
		return nil, badToken()
	}
	return parts, nil
}

// AgentPage is one page of ListAgents.
type AgentPage struct {
	Agents []Agent
	// NextToken is empty on the last page.
	NextToken string
}

// ListAgents returns one page of agents, sorted by id.
func (f *Fleet) ListAgents(p Page) (AgentPage, error) {
	after := ""
	if p.Token != "" {
		parts, err := decodeToken(p.Token, tokAgents, 1)
		if err != nil {
			return AgentPage{}, err
		}
		if validateKnownID("agent", parts[0]) != nil {
			return AgentPage{}, badToken()
		}
		after = parts[0]
	}
	size := p.size()
	f.mu.RLock()
	defer f.mu.RUnlock()
	ids := make([]string, 0, min(len(f.agents), size+1))
	for id := range f.agents {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := AgentPage{Agents: make([]Agent, 0, min(len(ids), size))}
	budget := MaxPageBytes
	for i, id := range ids {
		if i == size {
			out.NextToken = encodeToken(tokAgents, out.Agents[len(out.Agents)-1].ID)
			break
		}
		a := f.agentLocked(f.agents[id])
		n := agentSize(&a)
		if n > budget {
			if i > 0 {
				out.NextToken = encodeToken(tokAgents, out.Agents[len(out.Agents)-1].ID)
				break
			}
			trimAgent(&a) // one agent alone over the budget: list it without log lines
		}
		budget -= n
		out.Agents = append(out.Agents, a)
	}
	return out, nil
}

// NodePage is one page of ListNodes.
type NodePage struct {
	Nodes []Node
	// NextToken is empty on the last page.
	NextToken string
}

// ListNodes returns one page of node records (of one agent, when agentID
// is not empty), sorted by agent then node id. A token is valid only with
// the agentID it was issued for.
func (f *Fleet) ListNodes(agentID string, p Page) (NodePage, error) {
	if agentID != "" {
		if err := validateKnownID("agent", agentID); err != nil {
			return NodePage{}, err
		}
	}
	var afterAgent, afterNode string
	if p.Token != "" {
		parts, err := decodeToken(p.Token, tokNodes, 3)
		if err != nil {
			return NodePage{}, err
		}
		if parts[0] != agentID || validateKnownID("agent", parts[1]) != nil || validateKnownID("node", parts[2]) != nil {
			return NodePage{}, badToken()
		}
		afterAgent, afterNode = parts[1], parts[2]
	}
	size := p.size()
	f.mu.RLock()
	defer f.mu.RUnlock()
	src := f.nodes
	if agentID != "" {
		a := f.agents[agentID]
		if a == nil {
			return NodePage{}, unknownAgent(agentID)
		}
		src = a.nodes
	}
	less := func(x, y *Node) int {
		if c := strings.Compare(x.AgentID, y.AgentID); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	}
	after := &Node{AgentID: afterAgent, ID: afterNode}
	sel := make([]*Node, 0, min(len(src), size+1))
	for _, n := range src {
		if p.Token == "" || less(n, after) > 0 {
			sel = append(sel, n)
		}
	}
	slices.SortFunc(sel, less)
	out := NodePage{Nodes: make([]Node, 0, min(len(sel), size))}
	budget := MaxPageBytes
	next := func() string {
		last := out.Nodes[len(out.Nodes)-1]
		return encodeToken(tokNodes, agentID, last.AgentID, last.ID)
	}
	for i, n := range sel {
		if i == size {
			out.NextToken = next()
			break
		}
		c := copyNode(n)
		sz := nodeSize(&c)
		if sz > budget {
			if i > 0 {
				out.NextToken = next()
				break
			}
			if c.Status != nil {
				c.Status.LastLogLines = nil
			}
		}
		budget -= sz
		out.Nodes = append(out.Nodes, c)
	}
	return out, nil
}

// EventPage is one page of ListEvents.
type EventPage struct {
	Events []Event
	// NextToken is empty when no later event is kept yet.
	NextToken string
}

// ListEvents returns one page of kept events with Seq > since (or after the
// token's event when a token is given), oldest first.
func (f *Fleet) ListEvents(since uint64, p Page) (EventPage, error) {
	if p.Token != "" {
		parts, err := decodeToken(p.Token, tokEvents, 1)
		if err != nil {
			return EventPage{}, err
		}
		v, err := strconv.ParseUint(parts[0], 10, 64)
		if err != nil {
			return EventPage{}, badToken()
		}
		since = v
	}
	size := p.size()
	f.mu.RLock()
	defer f.mu.RUnlock()
	i := sort.Search(len(f.events), func(i int) bool { return f.events[i].Seq > since })
	rest := f.events[i:]
	out := EventPage{Events: make([]Event, 0, min(len(rest), size))}
	budget := MaxPageBytes
	for j, e := range rest {
		sz := eventSize(&e)
		if j == size || (sz > budget && j > 0) {
			out.NextToken = encodeToken(tokEvents, strconv.FormatUint(out.Events[len(out.Events)-1].Seq, 10))
			break
		}
		budget -= sz
		out.Events = append(out.Events, e)
	}
	return out, nil
}

// Size estimates: an upper bound of the protobuf encoding and of the JSON
// encoding without escapes (field names included in the fixed part).

func strsSize(ss []string) int {
	n := 0
	for _, s := range ss {
		n += len(s) + 8
	}
	return n
}

func statusSize(s *NodeStatus) int {
	return 256 + len(s.NodeID) + len(s.Endpoint) + len(s.Version) + len(s.LastExit) + len(s.Message) + len(s.State) + strsSize(s.LastLogLines)
}

func upgradeSize(u *UpgradeStatus) int {
	if u == nil {
		return 0
	}
	return 160 + len(u.Phase) + len(u.FromVersion) + len(u.ToVersion) + len(u.Message) + strsSize(u.LastLogLines)
}

func agentSize(a *Agent) int {
	n := 512 + len(a.ID) + len(a.Hostname) + len(a.Platform) + len(a.Arch) + len(a.AgentVersion) + len(a.InstanceID) +
		len(a.Desired.StorageServerVersion) + len(a.Desired.AgentVersion) + upgradeSize(a.Upgrade)
	for k, v := range a.Labels {
		n += len(k) + len(v) + 16
	}
	for _, d := range a.Desired.Nodes {
		n += 48 + len(d.NodeID)
	}
	for i := range a.Nodes {
		n += statusSize(&a.Nodes[i])
	}
	return n
}

func trimAgent(a *Agent) {
	for i := range a.Nodes {
		a.Nodes[i].LastLogLines = nil
	}
	if a.Upgrade != nil {
		a.Upgrade.LastLogLines = nil
	}
}

func nodeSize(n *Node) int {
	sz := 160 + len(n.ID) + len(n.AgentID)
	if n.Status != nil {
		sz += statusSize(n.Status)
	}
	return sz
}

func eventSize(e *Event) int {
	return 128 + len(e.Type) + len(e.AgentID) + len(e.NodeID) + len(e.Message)
}
