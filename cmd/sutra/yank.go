package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/semver"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// yankArtifact reads --artifact: storage-server (default) or sutra-agent.
func yankArtifact(a string) error {
	if a != "storage-server" && a != "sutra-agent" {
		return usageErr("--artifact %q: want storage-server or sutra-agent", a)
	}
	return nil
}

// yank is 'sutra binaries yank VERSION [--artifact A] [--rollback]'.
func (c *cli) yank(ctx context.Context, args []string) error {
	fs := c.flagSet("binaries yank")
	art := fs.String("artifact", "storage-server", "storage-server or sutra-agent")
	rollback := fs.Bool("rollback", false, "move the agents running VERSION back to the previous published, unyanked version")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("binaries yank takes exactly one version")
	}
	if err := yankArtifact(*art); err != nil {
		return err
	}
	if _, err := semver.Parse(pos[0]); err != nil {
		return usageErr("%q is not a version like 1.2.3", pos[0])
	}
	if *rollback && *art != "storage-server" {
		return usageErr("--rollback is for storage-server versions; for sutra-agent use 'sutra agents set-version --agent V'")
	}
	var resp *gridv1.YankVersionResponse
	if err := c.releaseCall(ctx, func(ctx context.Context, r gridv1.ReleaseServiceClient) (err error) {
		resp, err = r.YankVersion(ctx, &gridv1.YankVersionRequest{Artifact: *art, Version: pos[0]})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" && !*rollback {
		return writeJSON(c.stdout, resp)
	}
	running := resp.GetRunningAgentIds()
	fmt.Fprintf(c.stdout, "%s %s yanked by %s: it is no longer \"latest\" and cannot be a rollout target\n", *art, pos[0], dash(resp.GetYanked().GetYankedBy()))
	if len(running) == 0 {
		fmt.Fprintln(c.stdout, "no agent runs it")
	} else {
		fmt.Fprintf(c.stdout, "agents running it (%d): %s\n", len(running), strings.Join(running, ", "))
	}
	if !*rollback || len(running) == 0 {
		return nil
	}
	return c.rollbackYanked(ctx, *art, pos[0], running)
}

// rollbackYanked moves each running agent back to the highest published
// version below yanked for its platform that is not yanked itself: it asks
// the master again with rollback_to (the yank is idempotent), which starts
// a rollback-only rollout when it runs the rollout controller, else sets
// the agents one by one. Pinned agents are refused and reported.
func (c *cli) rollbackYanked(ctx context.Context, art, yanked string, running []string) error {
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	list, _, err := hc.Binaries(hctx)
	cancel()
	if err != nil {
		return httpErr(hc, err)
	}
	var failed []string
	to := map[string]string{}
	for _, id := range running {
		var a *gridv1.Agent
		if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
			a, err = g.GetAgent(ctx, &gridv1.GetAgentRequest{AgentId: id})
			return err
		}); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		prev, ok := previousVersion(list, yanked, a.GetPlatform(), a.GetArch())
		if !ok {
			failed = append(failed, fmt.Sprintf("%s: no published, unyanked version below %s for %s/%s", id, yanked, a.GetPlatform(), a.GetArch()))
			continue
		}
		to[id] = prev
	}
	if len(to) > 0 {
		var resp *gridv1.YankVersionResponse
		if err := c.releaseCall(ctx, func(ctx context.Context, r gridv1.ReleaseServiceClient) (err error) {
			resp, err = r.YankVersion(ctx, &gridv1.YankVersionRequest{Artifact: art, Version: yanked, RollbackTo: to})
			return err
		}); err != nil {
			return err
		}
		if id := resp.GetRolloutId(); id != "" {
			fmt.Fprintf(c.stdout, "rollback rollout %s started for %d agents (sutra rollouts %s)\n", id, len(to), id)
		}
		for _, id := range resp.GetRolledBackAgentIds() {
			fmt.Fprintf(c.stdout, "agent %s: storage-server %s -> %s\n", id, yanked, to[id])
		}
		failed = append(failed, resp.GetRollbackFailures()...)
	}
	if len(failed) > 0 {
		return &cliError{code: exitError, msg: "rollback incomplete:\n  " + strings.Join(failed, "\n  ")}
	}
	return nil
}

// previousVersion is the highest version below v in list for the
// platform and arch that is not yanked; stable versions first.
func previousVersion(list []httpapi.BinaryInfo, v, platform, arch string) (string, bool) {
	ref, err := semver.Parse(v)
	if err != nil {
		return "", false
	}
	var best semver.Version
	found := false
	for _, b := range list {
		if b.Platform != platform || b.Arch != arch || b.Yanked || (b.Artifact != "" && b.Artifact != "storage-server") {
			continue
		}
		bv, err := semver.Parse(b.Version)
		if err != nil || bv.Compare(ref) >= 0 {
			continue
		}
		if !found || (best.IsPrerelease() && !bv.IsPrerelease()) || (best.IsPrerelease() == bv.IsPrerelease() && bv.Compare(best) > 0) {
			best, found = bv, true
		}
	}
	return best.String(), found
}

// unyank is 'sutra binaries unyank VERSION [--artifact A]'.
func (c *cli) unyank(ctx context.Context, args []string) error {
	fs := c.flagSet("binaries unyank")
	art := fs.String("artifact", "storage-server", "storage-server or sutra-agent")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("binaries unyank takes exactly one version")
	}
	if err := yankArtifact(*art); err != nil {
		return err
	}
	if _, err := semver.Parse(pos[0]); err != nil {
		return usageErr("%q is not a version like 1.2.3", pos[0])
	}
	var resp *gridv1.UnyankVersionResponse
	if err := c.releaseCall(ctx, func(ctx context.Context, r gridv1.ReleaseServiceClient) (err error) {
		resp, err = r.UnyankVersion(ctx, &gridv1.UnyankVersionRequest{Artifact: *art, Version: pos[0]})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, resp)
	}
	if !resp.GetWasYanked() {
		_, err = fmt.Fprintf(c.stdout, "%s %s was not yanked\n", *art, pos[0])
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s %s unyanked: it can be \"latest\" and a rollout target again\n", *art, pos[0])
	return err
}
