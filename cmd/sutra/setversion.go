package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/sutragrid/sutra/internal/semver"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// checkVersion accepts "", "latest" or a strict semantic version.
func checkVersion(flagName, v string) error {
	if v == "" || v == "latest" {
		return nil
	}
	if _, err := semver.Parse(v); err != nil {
		return usageErr("--%s %q is not \"latest\" or a version like 1.2.3", flagName, v)
	}
	return nil
}

// setVersion runs "sutra agents set-version".
func (c *cli) setVersion(ctx context.Context, args []string) error {
	fs := c.flagSet("agents set-version")
	storage := fs.String("storage-server", "", `storage-server version ("latest" or x.y.z)`)
	agentV := fs.String("agent", "", `sutra-agent version ("latest" or x.y.z)`)
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageErr("agents set-version takes at most one agent id, got %q", strings.Join(pos, " "))
	}
	if *storage == "" && *agentV == "" {
		return usageErr("agents set-version: give --storage-server V, --agent V or both")
	}
	if err := checkVersion("storage-server", *storage); err != nil {
		return err
	}
	if err := checkVersion("agent", *agentV); err != nil {
		return err
	}
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	req := &gridv1.SetDesiredVersionRequest{AgentId: id, StorageServerVersion: *storage, AgentVersion: *agentV}
	var resp *gridv1.Agent
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		resp, err = g.SetDesiredVersion(ctx, req)
		return err
	}); err != nil {
		return err
	}
	agents := []*gridv1.Agent{resp}
	if id == "" {
		// The reply carries only the new defaults: show every agent.
		var list *gridv1.ListAgentsResponse
		if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
			list, err = g.ListAgents(ctx, &gridv1.ListAgentsRequest{})
			return err
		}); err != nil {
			return err
		}
		agents = list.GetAgents()
	}
	if c.g.output == "json" {
		if id != "" {
			return writeJSON(c.stdout, resp)
		}
		return writeJSONList(c.stdout, true, agents...)
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "AGENT\tSTORAGE SERVER\tAGENT VERSION\tDESIRED AGENT\tGEN\tUPGRADE")
	for _, a := range agents {
		d := a.GetDesired()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", a.GetAgentId(), dash(d.GetStorageServerVersion()), dash(a.GetAgentVersion()),
			dash(d.GetAgentVersion()), d.GetGeneration(), upgradePhase(a.GetUpgrade()))
	}
	if id == "" {
		if len(agents) == 0 {
			fmt.Fprintln(tw, "(no agents registered yet)")
		}
		d := resp.GetDesired()
		fmt.Fprintf(tw, "(agents registering later get storage-server %s, agent %s)\n", dash(d.GetStorageServerVersion()), dash(d.GetAgentVersion()))
		for _, a := range agents {
			_, ss := a.GetPins()["storage-server"]
			_, ag := a.GetPins()["sutra-agent"]
			if (ss && *storage != "") || (ag && *agentV != "") {
				fmt.Fprintf(tw, "(skipped %s: pinned to %s; sutra agents unpin %s)\n", a.GetAgentId(), pinList(a), a.GetAgentId())
			}
		}
	}
	return tw.Flush()
}

// upgradePhase is an agent's self-update progress in one table cell:
// "-" when there never was one, else "phase to_version".
func upgradePhase(u *gridv1.UpgradeStatus) string {
	if u.GetPhase() == "" {
		return "-"
	}
	if u.GetToVersion() == "" {
		return u.GetPhase()
	}
	return u.GetPhase() + " " + u.GetToVersion()
}
