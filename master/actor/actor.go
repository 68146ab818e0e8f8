// Package actor names who caused a change on the master, for the event log
// (issue 12: every enrollment, renewal, revocation, token change and
// operator action is an event naming who did it).
//
// master/auth puts the authenticated caller of each call in its context
// (With); the fleet reads it (From) when it records the events of that
// call. An actor is only ever derived from what authentication verified:
// the operator token, an agent's client certificate, or the join token an
// enrollment spent; a context without one is the master's own work (its
// liveness sweep, garbage collection).
package actor

import (
	"context"
	"net"
	"strings"
)

// Master is the actor of the master's own work (sweeps).
const Master = "master"

// maxLen bounds an actor string (ids are short; an address is at most an
// IPv6 literal with a zone).
const maxLen = 128

type key struct{}

// With returns ctx carrying actor a.
func With(ctx context.Context, a string) context.Context {
	return context.WithValue(ctx, key{}, clip(a))
}

// From is the actor ctx carries, or Master when it carries none.
func From(ctx context.Context) string {
	if a, ok := ctx.Value(key{}).(string); ok && a != "" {
		return a
	}
	return Master
}

// Operator is the actor of a call made with the operator token from
// address addr ("host:port" or a bare host; empty if unknown).
func Operator(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if host == "" {
		host = "unknown"
	}
	return "operator@" + host
}

// Agent is the actor of a call authenticated by agent id's certificate.
func Agent(id string) string { return "agent:" + id }

// Token is the actor of an enrollment authorized by join token id.
func Token(id string) string { return "token:" + id }

func clip(a string) string {
	if len(a) > maxLen {
		a = a[:maxLen]
	}
	return strings.ToValidUTF8(a, "")
}
