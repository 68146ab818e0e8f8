package main

import (
	"strings"
	"testing"
)

// sutra agents revoke / unrevoke against a master: the table shows the
// state, sutra agents ID shows who revoked it, sutra events names the
// actor of each event, and bad arguments are usage errors.
func TestCLIRevoke(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 2)

	m.sutra(t, "agents", "revoke", "agent-1", "--reason", "disk stolen").want(t, 0, "agent agent-1 revoked at ", "by operator@127.0.0.1", "sutra agents unrevoke agent-1")
	r := m.sutra(t, "agents")
	r.want(t, 0, "agent-1")
	if !strings.Contains(r.stdout, "revoked") {
		t.Errorf("sutra agents does not show the revoked state:\n%s", r.stdout)
	}
	m.sutra(t, "agents", "agent-1").want(t, 0, "Revoked:", "operator@127.0.0.1")
	m.sutra(t, "events", "-n", "50").want(t, 0, "AgentRevoked", "disk stolen", "[by operator@127.0.0.1]", "AgentRegistered", "[by agent:agent-1]")
	m.sutra(t, "-o", "json", "events", "-n", "50").want(t, 0, `"actor":"operator@127.0.0.1"`)

	m.sutra(t, "agents", "unrevoke", "agent-1").want(t, 0, "revocation of agent agent-1 lifted", "new join token")
	if r := m.sutra(t, "agents", "unrevoke", "agent-1"); r.code != exitNotFound || !strings.Contains(r.stderr, "not revoked") {
		t.Errorf("unrevoke of an agent not revoked: exit %d, stderr %q; want %d naming it", r.code, r.stderr, exitNotFound)
	}
	for _, args := range [][]string{
		{"agents", "revoke"},
		{"agents", "revoke", "a", "b"},
		{"agents", "unrevoke"},
		{"agents", "revoke", "agent-1", "--reason", strings.Repeat("x", 257)},
	} {
		if r := m.sutra(t, args...); r.code != exitUsage {
			t.Errorf("sutra %.60q: exit %d, want %d (usage)", args, r.code, exitUsage)
		}
	}
	if r := m.sutra(t, "agents", "revoke", "bad id!"); r.code != exitUsage || !strings.Contains(r.stderr, "agent id") {
		t.Errorf("revoke of an invalid id: exit %d, stderr %q", r.code, r.stderr)
	}
}
