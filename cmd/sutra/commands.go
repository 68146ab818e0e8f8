package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/version"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

var pj = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// writeJSON prints one message, or a list of messages as a JSON array.
func writeJSON[M proto.Message](w io.Writer, msgs ...M) error {
	return writeJSONList(w, false, msgs...)
}

func writeJSONList[M proto.Message](w io.Writer, list bool, msgs ...M) error {
	raw := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := pj.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		raw = append(raw, b)
	}
	var v any = raw
	if !list && len(raw) == 1 {
		v = raw[0]
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

func lower(enum fmt.Stringer, prefix string) string {
	s := strings.TrimPrefix(enum.String(), prefix)
	if s == "UNSPECIFIED" {
		return "-"
	}
	return strings.ToLower(s)
}

func health(h gridv1.AgentHealth) string    { return lower(h, "AGENT_HEALTH_") }
func state(s gridv1.NodeState) string       { return lower(s, "NODE_STATE_") }
func cluster(h gridv1.ClusterHealth) string { return lower(h, "CLUSTER_HEALTH_") }

func ago(unix int64, now time.Time) string {
	if unix == 0 {
		return "never"
	}
	d := now.Sub(time.Unix(unix, 0))
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) status(ctx context.Context, args []string) error {
	pos, err := c.parse(c.flagSet("status"), args)
	if err != nil {
		return err
	}
	if err := noArgs("status", pos); err != nil {
		return err
	}
	var cs *gridv1.ClusterStatus
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		cs, err = g.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, cs)
	}
	tw := table(c.stdout)
	fmt.Fprintf(tw, "Cluster:\t%s\n", cluster(cs.GetStatus()))
	fmt.Fprintf(tw, "Master:\t%s (version %s)\n", c.g.master, cs.GetMasterVersion())
	fmt.Fprintf(tw, "Agents:\t%d total, %d healthy, %d degraded, %d offline\n", cs.GetTotalAgents(), cs.GetHealthyAgents(), cs.GetDegradedAgents(), cs.GetOfflineAgents())
	fmt.Fprintf(tw, "Nodes:\t%d desired, %d running, %d failed\n", cs.GetTotalNodes(), cs.GetRunningNodes(), cs.GetFailedNodes())
	if st := cs.GetStore(); st != nil {
		health := "ok"
		if !st.GetOk() {
			health = "NOT OK: " + st.GetDetail()
		} else if st.GetDetail() != "" {
			health = "ok (" + st.GetDetail() + ")"
		}
		fmt.Fprintf(tw, "Store:\t%s, %s\n", st.GetBackend(), health)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(cs.GetMasters()) > 0 {
		leader := cs.GetLeader()
		if leader == "" {
			leader = "none (an election is running)"
		}
		fmt.Fprintf(c.stdout, "\nMasters (%d, leader %s):\n", len(cs.GetMasters()), leader)
		tw = table(c.stdout)
		fmt.Fprintln(tw, "MASTER\tROLE\tGRPC\tHTTP\tVERSION\tUP")
		for _, m := range cs.GetMasters() {
			role := "follower"
			if m.GetLeader() {
				role = "leader"
			}
			up := "-"
			if ms := m.GetStartedUnixMs(); ms > 0 {
				up = time.Since(time.UnixMilli(ms)).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.GetId(), role, dash(m.GetGrpcAddr()), dash(m.GetHttpUrl()), dash(m.GetVersion()), up)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if ms := cs.GetStore().GetMembers(); len(ms) > 1 || cs.GetStore().GetBackend() == "etcd" {
		fmt.Fprintf(c.stdout, "\nStore members:\n")
		tw = table(c.stdout)
		fmt.Fprintln(tw, "ENDPOINT\tHEALTH\tROLE\tDB SIZE\tVERSION")
		for _, m := range ms {
			h, role := "ok", "follower"
			if m.GetLeader() {
				role = "leader"
			}
			if !m.GetOk() {
				h, role = "DOWN: "+m.GetError(), "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d KiB\t%s\n", m.GetEndpoint(), h, role, m.GetDbSizeBytes()/1024, dash(m.GetVersion()))
		}
		return tw.Flush()
	}
	return nil
}

func (c *cli) agents(ctx context.Context, args []string) error {
	pos, err := c.parse(c.flagSet("agents"), args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageErr("agents takes at most one agent id, got %q", strings.Join(pos, " "))
	}
	if len(pos) == 1 {
		return c.agent(ctx, pos[0])
	}
	var agents []*gridv1.Agent
	err = c.pages(ctx, func(ctx context.Context, g gridv1.GridMasterClient, tok string) (string, error) {
		resp, err := g.ListAgents(ctx, &gridv1.ListAgentsRequest{PageSize: listPageSize, PageToken: tok})
		agents = append(agents, resp.GetAgents()...)
		return resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSONList(c.stdout, true, agents...)
	}
	now := time.Now()
	tw := table(c.stdout)
	fmt.Fprintln(tw, "AGENT\tHOST\tPLATFORM\tVERSION\tHEALTH\tNODES\tGEN\tLAST HEARTBEAT\tPINNED\tUPGRADE")
	for _, a := range agents {
		gen := fmt.Sprintf("%d", a.GetDesired().GetGeneration())
		if a.GetAppliedGeneration() != a.GetDesired().GetGeneration() {
			gen = fmt.Sprintf("%d (applied %d)", a.GetDesired().GetGeneration(), a.GetAppliedGeneration())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", a.GetAgentId(), dash(a.GetHostname()), a.GetPlatform(), a.GetArch(),
			dash(a.GetAgentVersion()), agentState(a), len(a.GetDesired().GetNodes()), a.GetMaxStorageNodes(), gen, ago(a.GetLastHeartbeatUnix(), now),
			pinList(a), upgradePhase(a.GetUpgrade()))
	}
	if len(agents) == 0 {
		fmt.Fprintln(tw, "(no agents registered: start sutra-agent on a machine pointed at this master)")
	}
	return tw.Flush()
}

// listPageSize is the page size the CLI asks for; the master may answer
// fewer items per page (it keeps each answer under the message limit).
const listPageSize = 500

// maxPages stops a list that never ends (a master answering the same token).
const maxPages = 100000

// pages calls fetch with each page token in turn, starting with "", until
// it returns an empty next token; each page has the request timeout.
func (c *cli) pages(ctx context.Context, fetch func(ctx context.Context, g gridv1.GridMasterClient, tok string) (next string, err error)) error {
	tok := ""
	seen := map[string]bool{}
	for range maxPages {
		var next string
		if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
			next, err = fetch(ctx, g, tok)
			return err
		}); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		if seen[next] {
			return &cliError{code: exitError, msg: fmt.Sprintf("the master at %s returned the same page token twice: the list cannot be completed (upgrade sutra-master)", c.g.master)}
		}
		seen[next], tok = true, next
	}
	return &cliError{code: exitError, msg: fmt.Sprintf("the list from %s has more than %d pages: giving up", c.g.master, maxPages)}
}

func (c *cli) removeAgent(ctx context.Context, args []string) error {
	fs := c.flagSet("agents rm")
	force := fs.Bool("force", false, "remove the agent even while it is healthy or degraded")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("agents rm takes exactly one agent id")
	}
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) error {
		_, err := g.UnregisterAgent(ctx, &gridv1.UnregisterAgentRequest{AgentId: pos[0], Force: *force})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		b, _ := json.MarshalIndent(map[string]any{"agent_id": pos[0], "removed": true}, "", "  ")
		_, err := fmt.Fprintf(c.stdout, "%s\n", b)
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "agent %s removed with its node records (a running sutra-agent registers again on its next heartbeat)\n", pos[0])
	return err
}

func (c *cli) agent(ctx context.Context, id string) error {
	var a *gridv1.Agent
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		a, err = g.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: id})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, a)
	}
	now := time.Now()
	tw := table(c.stdout)
	fmt.Fprintf(tw, "Agent:\t%s\n", a.GetAgentId())
	fmt.Fprintf(tw, "Host:\t%s (%s/%s)\n", dash(a.GetHostname()), a.GetPlatform(), a.GetArch())
	fmt.Fprintf(tw, "Version:\t%s\n", dash(a.GetAgentVersion()))
	fmt.Fprintf(tw, "Health:\t%s (last heartbeat %s)\n", health(a.GetHealth()), ago(a.GetLastHeartbeatUnix(), now))
	if m := a.GetMaster(); m != "" {
		fmt.Fprintf(tw, "Master:\t%s\n", m)
	}
	if a.GetRevoked() {
		fmt.Fprintf(tw, "Revoked:\t%s by %s (sutra agents unrevoke %s, then enroll it again with a new join token)\n", time.Unix(a.GetRevokedUnix(), 0).UTC().Format(time.RFC3339), dash(a.GetRevokedBy()), a.GetAgentId())
	}
	if len(a.GetPins()) > 0 {
		fmt.Fprintf(tw, "Pinned:\t%s (sutra agents unpin %s)\n", pinList(a), a.GetAgentId())
	}
	fmt.Fprintf(tw, "Generation:\t%d desired, %d applied\n", a.GetDesired().GetGeneration(), a.GetAppliedGeneration())
	fmt.Fprintf(tw, "Storage server:\t%s\n", a.GetDesired().GetStorageServerVersion())
	if v := a.GetDesired().GetAgentVersion(); v != "" {
		fmt.Fprintf(tw, "Desired agent:\t%s\n", v)
	}
	if u := a.GetUpgrade(); u != nil {
		fmt.Fprintf(tw, "Upgrade:\t%s %s -> %s %s\n", u.GetPhase(), u.GetFromVersion(), u.GetToVersion(), u.GetMessage())
	}
	fmt.Fprintf(tw, "Nodes:\t%d desired of max %d\n", len(a.GetDesired().GetNodes()), a.GetMaxStorageNodes())
	for _, n := range a.GetNodes() {
		fmt.Fprintf(tw, "  %s\t%s %s pid %d restarts %d\n", n.GetNodeId(), state(n.GetState()), dash(n.GetEndpoint()), n.GetPid(), n.GetRestartCount())
	}
	return tw.Flush()
}

func (c *cli) nodes(ctx context.Context, args []string) error {
	fs := c.flagSet("nodes")
	agent := fs.String("agent", "", "only nodes of this agent")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unknown nodes subcommand %q: use spawn or stop, or no argument to list", pos[0])
	}
	var nodes []*gridv1.StorageNode
	err = c.pages(ctx, func(ctx context.Context, g gridv1.GridMasterClient, tok string) (string, error) {
		resp, err := g.ListStorageNodes(ctx, &gridv1.ListStorageNodesRequest{AgentId: *agent, PageSize: listPageSize, PageToken: tok})
		nodes = append(nodes, resp.GetNodes()...)
		return resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSONList(c.stdout, true, nodes...)
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "NODE\tAGENT\tDESIRED\tSTATE\tENDPOINT\tPID\tVERSION\tRESTARTS\tLAST EXIT")
	for _, n := range nodes {
		s := n.GetStatus()
		st := "pending"
		if s != nil {
			st = state(s.GetState())
		}
		desired := "yes"
		if !n.GetDesired() {
			desired = "no (stopping)"
		}
		pid := "-"
		if s.GetPid() != 0 {
			pid = fmt.Sprint(s.GetPid())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", n.GetNodeId(), n.GetAgentId(), desired, st, dash(s.GetEndpoint()),
			pid, dash(s.GetVersion()), s.GetRestartCount(), dash(s.GetLastExit()))
	}
	if len(nodes) == 0 {
		fmt.Fprintln(tw, "(no storage nodes: create one with 'sutra nodes spawn')")
	}
	return tw.Flush()
}

func (c *cli) spawn(ctx context.Context, args []string) error {
	fs := c.flagSet("nodes spawn")
	agent := fs.String("agent", "", "agent to run the node (default: the master places it)")
	nodeID := fs.String("node-id", "", "node id (default: generated)")
	port := fs.Uint("port", 0, "fixed port (default: the agent chooses)")
	wait := fs.Bool("wait", false, "wait until the node runs")
	waitFor := fs.Duration("wait-timeout", 2*time.Minute, "how long --wait waits")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("nodes spawn", pos); err != nil {
		return err
	}
	if *port > 65535 {
		return usageErr("--port %d is out of range: use 1-65535", *port)
	}
	var resp *gridv1.SpawnStorageNodeResponse
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		resp, err = g.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: *agent, NodeId: *nodeID, Port: uint32(*port)})
		return err
	}); err != nil {
		return err
	}
	n := resp.GetNode()
	if *wait {
		if c.g.output == "table" {
			fmt.Fprintf(c.stderr, "spawn requested: node %s on agent %s; waiting for it to run...\n", n.GetNodeId(), n.GetAgentId())
		}
		n, err = c.waitNode(ctx, n.GetNodeId(), *waitFor, func(n *gridv1.StorageNode) (bool, error) {
			switch n.GetStatus().GetState() {
			case gridv1.NodeState_NODE_STATE_RUNNING:
				return true, nil
			case gridv1.NodeState_NODE_STATE_FAILED:
				s := n.GetStatus()
				msg := fmt.Sprintf("node %s failed on agent %s: %s", n.GetNodeId(), n.GetAgentId(), dash(s.GetMessage()+" "+s.GetLastExit()))
				if l := s.GetLastLogLines(); len(l) > 0 {
					msg += "; last log line: " + l[len(l)-1]
				}
				return false, &cliError{code: exitError, msg: msg + " (see 'sutra events' and the agent's log)"}
			}
			return false, nil
		})
		if err != nil {
			return err
		}
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, n)
	}
	if *wait {
		fmt.Fprintf(c.stdout, "node %s running on agent %s at %s (pid %d)\n", n.GetNodeId(), n.GetAgentId(), n.GetStatus().GetEndpoint(), n.GetStatus().GetPid())
		return nil
	}
	fmt.Fprintf(c.stdout, "node %s requested on agent %s (watch it with 'sutra nodes' or 'sutra events -f')\n", n.GetNodeId(), n.GetAgentId())
	return nil
}

func (c *cli) stop(ctx context.Context, args []string) error {
	fs := c.flagSet("nodes stop")
	wait := fs.Bool("wait", false, "wait until the agent has stopped the node")
	waitFor := fs.Duration("wait-timeout", 2*time.Minute, "how long --wait waits")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("nodes stop takes exactly one node id")
	}
	var resp *gridv1.StopStorageNodeResponse
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		resp, err = g.StopStorageNode(ctx, &gridv1.StopStorageNodeRequest{NodeId: pos[0]})
		return err
	}); err != nil {
		return err
	}
	n := resp.GetNode()
	if *wait {
		_, err := c.waitNode(ctx, n.GetNodeId(), *waitFor, func(n *gridv1.StorageNode) (bool, error) {
			return n.GetStatus().GetState() == gridv1.NodeState_NODE_STATE_STOPPED, nil
		})
		var ce *cliError
		if errors.As(err, &ce) && ce.code == exitNotFound {
			err = nil // the record is dropped once the agent stopped the node
		}
		if err != nil {
			return err
		}
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, n)
	}
	if *wait {
		fmt.Fprintf(c.stdout, "node %s stopped on agent %s (its data is kept)\n", n.GetNodeId(), n.GetAgentId())
		return nil
	}
	fmt.Fprintf(c.stdout, "node %s: stop requested on agent %s (its data is kept)\n", n.GetNodeId(), n.GetAgentId())
	return nil
}

// waitNode polls a node until done reports true, done fails, or the wait times out.
func (c *cli) waitNode(ctx context.Context, id string, timeout time.Duration, done func(*gridv1.StorageNode) (bool, error)) (*gridv1.StorageNode, error) {
	deadline := time.Now().Add(timeout)
	for {
		var n *gridv1.StorageNode
		err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
			n, err = g.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: id})
			return err
		})
		if err != nil {
			return nil, err
		}
		ok, err := done(n)
		if err != nil || ok {
			return n, err
		}
		if time.Now().After(deadline) {
			return nil, &cliError{code: exitError, msg: fmt.Sprintf("node %s is still %s after %s: check 'sutra events' and the agent's log, or wait longer with --wait-timeout",
				id, dash(state(n.GetStatus().GetState())), timeout)}
		}
		select {
		case <-ctx.Done():
			return nil, &cliError{code: exitError, msg: "interrupted"}
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// httpClient returns the client of the master's HTTP API: --http /
// SUTRA_HTTP, else port 7001 on the --master host.
func (c *cli) httpClient() (*httpapi.Client, error) {
	base := c.g.http
	if base == "" {
		host, _, err := net.SplitHostPort(c.g.master)
		if err != nil {
			return nil, usageErr("master address %q is not host:port: set --master, or --http / SUTRA_HTTP", c.g.master)
		}
		base = "http://" + net.JoinHostPort(host, "7001")
	}
	var client *http.Client // plain http: the default client, no token
	if strings.HasPrefix(strings.ToLower(base), "https://") {
		creds, err := c.credentials()
		if err != nil {
			return nil, err
		}
		client = httpsClient(creds) // httptls.go
	}
	hc, err := httpapi.NewClient(base, client)
	if err != nil {
		return nil, usageErr("%v: set --http or SUTRA_HTTP", err)
	}
	return hc, nil
}

// httpErr turns an error of the HTTP API client into the CLI's exit codes.
func httpErr(hc *httpapi.Client, err error) error {
	var se *httpapi.StatusError
	switch {
	case errors.As(err, &se):
		code := exitError
		if se.StatusCode == http.StatusNotFound {
			code = exitNotFound
		} else if se.StatusCode == http.StatusUnauthorized {
			return &cliError{code: exitUnauthorized, msg: fmt.Sprintf("%s %s: %s: %s: use --http https://… with the operator token: %s", se.Method, se.URL, se.Status, dash(se.Message), hintAuth)}
		} else if se.StatusCode >= 500 || se.StatusCode == http.StatusTooManyRequests {
			code = exitUnavailable
		}
		return &cliError{code: code, msg: fmt.Sprintf("%s %s: %s: %s", se.Method, se.URL, se.Status, dash(se.Message))}
	case errors.Is(err, httpapi.ErrUnreachable):
		return &cliError{code: exitUnavailable, msg: fmt.Sprintf("%v: is sutra-master running at %s? (set --http or SUTRA_HTTP)", err, hc.Base())}
	case errors.Is(err, httpapi.ErrNotContract):
		return &cliError{code: exitError, msg: fmt.Sprintf("%v: is --http the master's HTTP port?", err)}
	}
	return &cliError{code: exitError, msg: err.Error()}
}

func (c *cli) binaries(ctx context.Context, args []string) error {
	pos, err := c.parse(c.flagSet("binaries"), args)
	if err != nil {
		return err
	}
	if err := noArgs("binaries", pos); err != nil {
		return err
	}
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	list, body, err := hc.Binaries(ctx)
	if err != nil {
		return httpErr(hc, err)
	}
	if c.g.output == "json" {
		var out bytes.Buffer
		if err := json.Indent(&out, body, "", "  "); err != nil {
			return err
		}
		_, err := fmt.Fprintln(c.stdout, strings.TrimSpace(out.String()))
		return err
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "VERSION\tPLATFORM\tARCH\tSIZE\tSHA256\tSIGNED\tYANKED\tUPLOADED\tFILE")
	for _, b := range list {
		sum := b.Checksum
		if len(sum) > 12 {
			sum = sum[:12] + "…"
		}
		up := "-"
		if b.UploadedAt > 0 {
			up = time.Unix(b.UploadedAt, 0).UTC().Format("2006-01-02 15:04")
		}
		signed := "no"
		if b.Signature != "" {
			signed = "yes"
		}
		yanked := "no"
		if b.Yanked {
			yanked = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.Version, b.Platform, b.Arch, size(b.SizeBytes), sum, signed, yanked, up, b.Path)
	}
	if len(list) == 0 {
		fmt.Fprintln(tw, "(no binaries: put storage-server-<version>-<platform>-<arch> files in the master's BINARIES_DIR)")
	}
	return tw.Flush()
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (c *cli) events(ctx context.Context, args []string) error {
	fs := c.flagSet("events")
	follow := fs.Bool("f", false, "follow new events (reconnects when the master restarts)")
	fs.BoolVar(follow, "follow", false, "follow new events")
	since := fs.Uint64("since", 0, "show events after this sequence number")
	tail := fs.Uint("n", 20, "show the last N events (when --since is not given)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("events", pos); err != nil {
		return err
	}
	g, err := c.client()
	if err != nil {
		return err
	}
	print := func(e *gridv1.Event) error {
		if c.g.output == "json" {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(e)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.stdout, "%s\n", b)
			return err
		}
		t := time.UnixMilli(e.GetTimeUnixMs()).Local().Format("2006-01-02 15:04:05")
		subject := e.GetAgentId()
		if e.GetNodeId() != "" {
			subject += "/" + e.GetNodeId()
		}
		by := ""
		if e.GetActor() != "" {
			by = " [by " + e.GetActor() + "]"
		}
		_, err := fmt.Fprintf(c.stdout, "%-6d %s  %-19s %-24s %s%s\n", e.GetSeq(), t, e.GetType(), subject, e.GetMessage(), by)
		return err
	}
	req := &gridv1.WatchEventsRequest{SinceSeq: *since, NoFollow: !*follow}
	if *since == 0 {
		req.Tail = uint32(*tail)
	}
	if c.g.output == "table" && !*follow {
		// Header only for the one-shot listing; a followed stream stays line-oriented.
		fmt.Fprintf(c.stdout, "%-6s %-19s  %-19s %-24s %s\n", "SEQ", "TIME", "TYPE", "AGENT/NODE", "MESSAGE")
	}
	last, connected := req.GetSinceSeq(), false
	for {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := g.WatchEvents(sctx, req)
		for err == nil {
			var e *gridv1.Event
			e, err = stream.Recv()
			if err == nil {
				connected = true
				last = e.GetSeq()
				if perr := print(e); perr != nil {
					cancel()
					return perr
				}
			}
		}
		cancel()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if ctx.Err() != nil {
			return nil // Ctrl-C ends a follow
		}
		code := status.Code(err)
		retry := *follow && (code == codes.Unavailable || code == codes.ResourceExhausted) && (connected || code == codes.ResourceExhausted)
		if !retry {
			return c.rpcErr(err)
		}
		fmt.Fprintf(c.stderr, "sutra: event stream interrupted (%s); reconnecting from seq %d...\n", code, last)
		req = &gridv1.WatchEventsRequest{SinceSeq: last}
		if last == 0 {
			req = &gridv1.WatchEventsRequest{}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (c *cli) version(ctx context.Context, args []string) error {
	pos, err := c.parse(c.flagSet("version"), args)
	if err != nil {
		return err
	}
	if err := noArgs("version", pos); err != nil {
		return err
	}
	masterVersion := ""
	var cs *gridv1.ClusterStatus
	merr := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		cs, err = g.GetClusterStatus(ctx, &gridv1.GetClusterStatusRequest{})
		return err
	})
	if merr == nil {
		masterVersion = cs.GetMasterVersion()
	}
	if c.g.output == "json" {
		out := map[string]string{"sutra": version.Version, "master": masterVersion, "master_address": c.g.master}
		b, _ := json.MarshalIndent(out, "", "  ")
		_, err := fmt.Fprintf(c.stdout, "%s\n", b)
		return err
	}
	fmt.Fprintf(c.stdout, "sutra %s\n", version.Version)
	if merr != nil {
		fmt.Fprintf(c.stdout, "master %s: unknown (%v)\n", c.g.master, merr)
		return nil
	}
	fmt.Fprintf(c.stdout, "master %s: %s\n", c.g.master, masterVersion)
	return nil
}
