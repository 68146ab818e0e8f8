package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sutragrid/sutra/internal/semver"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// releaseCall is call for the ReleaseService, on the same connection.
func (c *cli) releaseCall(ctx context.Context, fn func(ctx context.Context, r gridv1.ReleaseServiceClient) error) error {
	if _, err := c.client(); err != nil {
		return err
	}
	if c.conn == nil {
		return usageErr("no connection to the master")
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	return c.rpcErr(fn(ctx, gridv1.NewReleaseServiceClient(c.conn)))
}

// pinList is an agent's pins as "storage-server 1.2.0, sutra-agent 0.3.0", or "-".
func pinList(a *gridv1.Agent) string {
	if len(a.GetPins()) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(a.GetPins())) {
		parts = append(parts, k+" "+a.GetPins()[k])
	}
	return strings.Join(parts, ", ")
}

// pinAgent is 'sutra agents pin ID --storage-server V | --agent V'.
func (c *cli) pinAgent(ctx context.Context, args []string) error {
	fs := c.flagSet("agents pin")
	storage := fs.String("storage-server", "", "pin the storage-server version (x.y.z)")
	agentV := fs.String("agent", "", "pin the sutra-agent version (x.y.z)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("agents pin takes exactly one agent id")
	}
	if *storage == "" && *agentV == "" {
		return usageErr("agents pin: give --storage-server V, --agent V or both (exact versions like 1.2.3)")
	}
	var reqs []*gridv1.PinAgentRequest
	for _, p := range []struct{ flag, artifact, v string }{{"storage-server", "storage-server", *storage}, {"agent", "sutra-agent", *agentV}} {
		if p.v == "" {
			continue
		}
		if _, err := semver.Parse(p.v); err != nil {
			return usageErr("--%s %q is not an exact version like 1.2.3 (\"latest\" is not a pin)", p.flag, p.v)
		}
		reqs = append(reqs, &gridv1.PinAgentRequest{AgentId: pos[0], Artifact: p.artifact, Version: p.v})
	}
	var a *gridv1.Agent
	for _, req := range reqs {
		if err := c.releaseCall(ctx, func(ctx context.Context, r gridv1.ReleaseServiceClient) (err error) {
			a, err = r.PinAgent(ctx, req)
			return err
		}); err != nil {
			return err
		}
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, a)
	}
	_, err = fmt.Fprintf(c.stdout, "agent %s pinned: %s (set-version and rollouts leave it alone until 'sutra agents unpin %s')\n", a.GetAgentId(), pinList(a), a.GetAgentId())
	return err
}

// unpinAgent is 'sutra agents unpin ID [--storage-server|--agent]'.
func (c *cli) unpinAgent(ctx context.Context, args []string) error {
	fs := c.flagSet("agents unpin")
	storage := fs.Bool("storage-server", false, "lift only the storage-server pin")
	agentV := fs.Bool("agent", false, "lift only the sutra-agent pin")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("agents unpin takes exactly one agent id")
	}
	var artifacts []string
	switch {
	case *storage && *agentV, !*storage && !*agentV:
		artifacts = []string{""}
	case *storage:
		artifacts = []string{"storage-server"}
	default:
		artifacts = []string{"sutra-agent"}
	}
	var a *gridv1.Agent
	for _, art := range artifacts {
		if err := c.releaseCall(ctx, func(ctx context.Context, r gridv1.ReleaseServiceClient) (err error) {
			a, err = r.UnpinAgent(ctx, &gridv1.UnpinAgentRequest{AgentId: pos[0], Artifact: art})
			return err
		}); err != nil {
			return err
		}
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, a)
	}
	_, err = fmt.Fprintf(c.stdout, "agent %s unpinned (pins now: %s); its desired versions stay until changed\n", a.GetAgentId(), pinList(a))
	return err
}
