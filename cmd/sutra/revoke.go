package main

import (
	"context"
	"fmt"
	"time"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// maxRevokeReason is the master's limit for a revocation's reason.
const maxRevokeReason = 256

// revokeAgent is 'sutra agents revoke ID [--reason TEXT]'.
func (c *cli) revokeAgent(ctx context.Context, args []string) error {
	fs := c.flagSet("agents revoke")
	reason := fs.String("reason", "", "why, for the record (at most 256 bytes)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("agents revoke takes exactly one agent id")
	}
	if len(*reason) > maxRevokeReason {
		return usageErr("--reason is %d bytes long: at most %d", len(*reason), maxRevokeReason)
	}
	var a *gridv1.Agent
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		a, err = g.RevokeAgent(ctx, &gridv1.RevokeAgentRequest{AgentId: pos[0], Reason: *reason})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, a)
	}
	_, err = fmt.Fprintf(c.stdout, "agent %s revoked at %s by %s: its certificates are refused and its streams closed; its nodes keep running (stop them with 'sutra nodes stop' if you want them gone). To bring it back: 'sutra agents unrevoke %s', then enroll it again with a new join token\n",
		a.GetAgentId(), time.Unix(a.GetRevokedUnix(), 0).UTC().Format(time.RFC3339), dash(a.GetRevokedBy()), a.GetAgentId())
	return err
}

// unrevokeAgent is 'sutra agents unrevoke ID'.
func (c *cli) unrevokeAgent(ctx context.Context, args []string) error {
	pos, err := c.parse(c.flagSet("agents unrevoke"), args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("agents unrevoke takes exactly one agent id")
	}
	var a *gridv1.Agent
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) (err error) {
		a, err = g.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: pos[0]})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, a)
	}
	_, err = fmt.Fprintf(c.stdout, "revocation of agent %s lifted; its old certificates stay refused: enroll it again with a new join token (sutra tokens create, then sutra-agent run --join-token ...)\n", a.GetAgentId())
	return err
}

// agentState is the agents table's HEALTH column: revoked wins.
func agentState(a *gridv1.Agent) string {
	if a.GetRevoked() {
		return "revoked"
	}
	return health(a.GetHealth())
}
