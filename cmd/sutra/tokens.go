package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// labelFlags collects repeated --label k=v flags.
type labelFlags map[string]string

func (l labelFlags) String() string { return "" }

func (l labelFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not key=value", v)
	}
	l[k] = val
	return nil
}

func (c *cli) createToken(ctx context.Context, args []string) error {
	fs := c.flagSet("tokens create")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token can be used")
	uses := fs.Uint("uses", 1, "how many agents it can enroll")
	labels := labelFlags{}
	fs.Var(labels, "label", "key=value given to every agent it enrolls (repeatable)")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("tokens create", pos); err != nil {
		return err
	}
	if *ttl < time.Second {
		return usageErr("--ttl must be at least 1s")
	}
	if *uses < 1 || *uses > 1<<30 {
		return usageErr("--uses must be from 1 to %d", 1<<30)
	}
	var resp *gridv1.CreateJoinTokenResponse
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) error {
		resp, err = g.CreateJoinToken(ctx, &gridv1.CreateJoinTokenRequest{TtlSecs: int64(*ttl / time.Second), Uses: uint32(*uses), Labels: labels})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.stdout, resp)
	}
	i := resp.GetInfo()
	_, err = fmt.Fprintf(c.stdout, "%s\n\nJoin token %s: %d use(s), expires %s. It is shown only this once; enroll an agent with\n  sutra-agent run --join-token <token>   (or SUTRA_JOIN_TOKEN, or join_token in agent-config.toml)\n",
		resp.GetToken(), i.GetId(), i.GetUses(), time.Unix(i.GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
	return err
}

func (c *cli) tokens(ctx context.Context, args []string) error {
	fs := c.flagSet("tokens")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("tokens", pos); err != nil {
		return err
	}
	var resp *gridv1.ListJoinTokensResponse
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) error {
		resp, err = g.ListJoinTokens(ctx, &gridv1.ListJoinTokensRequest{})
		return err
	}); err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSONList(c.stdout, true, resp.GetTokens()...)
	}
	now := time.Now()
	w := table(c.stdout)
	fmt.Fprintln(w, "ID\tSTATE\tUSED\tEXPIRES\tLABELS\tCREATED BY")
	for _, t := range resp.GetTokens() {
		var ls []string
		for k, v := range t.GetLabels() {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		exp := time.Unix(t.GetExpiresUnix(), 0)
		when := "in " + exp.Sub(now).Round(time.Minute).String()
		if !exp.After(now) {
			when = ago(t.GetExpiresUnix(), now)
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%s\t%s\n", t.GetId(), t.GetState(), t.GetUsed(), t.GetUses(), when, dash(strings.Join(ls, ",")), dash(t.GetCreatedBy()))
	}
	return w.Flush()
}

func (c *cli) removeToken(ctx context.Context, args []string) error {
	fs := c.flagSet("tokens rm")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("tokens rm takes exactly one token id")
	}
	if err := c.call(ctx, func(ctx context.Context, g gridv1.GridMasterClient) error {
		_, err := g.RemoveJoinToken(ctx, &gridv1.RemoveJoinTokenRequest{Id: pos[0]})
		return err
	}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "join token %s removed: it enrolls no more agents (agents it enrolled keep their certificates)\n", pos[0])
	return err
}
