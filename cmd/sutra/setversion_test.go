package main

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

func TestCLISetVersion(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 2)
	m.simulateAgent(t, "agent-2", 2)

	// One agent: only its desired state changes.
	r := m.sutra(t, "agents", "set-version", "agent-1", "--agent", "1.1.0")
	r.want(t, 0, "AGENT", "DESIRED AGENT", "agent-1", "1.1.0")
	if strings.Contains(r.stdout, "agent-2") || strings.Contains(r.stdout, "registering later") {
		t.Fatalf("set-version agent-1 shows more than agent-1:\n%s", r.stdout)
	}
	a1, err := m.grid.GetAgent(context.Background(), &gridv1.GetAgentRequest{AgentId: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := a1.GetDesired().GetAgentVersion(); got != "1.1.0" {
		t.Fatalf("agent-1 desired agent version = %q, want 1.1.0", got)
	}
	a2, err := m.grid.GetAgent(context.Background(), &gridv1.GetAgentRequest{AgentId: "agent-2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := a2.GetDesired().GetAgentVersion(); got != "" {
		t.Fatalf("agent-2 desired agent version = %q after set-version agent-1, want unchanged (empty)", got)
	}

	// JSON for one agent is the Agent message.
	r = m.sutra(t, "agents", "set-version", "agent-2", "--storage-server", "1.2.0", "-o", "json")
	r.want(t, 0)
	var one struct {
		AgentID string `json:"agent_id"`
		Desired struct {
			StorageServerVersion string `json:"storage_server_version"`
			Generation           string `json:"generation"`
		} `json:"desired"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &one); err != nil || one.AgentID != "agent-2" || one.Desired.StorageServerVersion != "1.2.0" {
		t.Fatalf("set-version agent-2 -o json = %s (%v), want agent-2 with storage-server 1.2.0", r.stdout, err)
	}

	// Every agent (flags before the id-less command line), then the list.
	r = m.sutra(t, "--output", "json", "agents", "set-version", "--agent", "latest", "--storage-server", "1.3.0")
	r.want(t, 0)
	var all []struct {
		AgentID string `json:"agent_id"`
		Desired struct {
			StorageServerVersion string `json:"storage_server_version"`
			AgentVersion         string `json:"agent_version"`
		} `json:"desired"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || len(all) != 2 {
		t.Fatalf("set-version (all) -o json = %s (%v), want 2 agents", r.stdout, err)
	}
	for _, a := range all {
		if a.Desired.StorageServerVersion != "1.3.0" || a.Desired.AgentVersion != "latest" {
			t.Errorf("after set-version for all, %s desires storage-server %q agent %q, want 1.3.0 and latest",
				a.AgentID, a.Desired.StorageServerVersion, a.Desired.AgentVersion)
		}
	}
	r = m.sutra(t, "agents", "set-version", "--storage-server", "1.3.1")
	r.want(t, 0, "agent-1", "agent-2", "1.3.1", "agents registering later get storage-server 1.3.1, agent latest")

	// An agent registering later gets the fleet-wide versions.
	resp, err := m.enroll(t, "agent-3").RegisterAgent(context.Background(), &gridv1.RegisterAgentRequest{AgentId: "agent-3", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDesired(); d.GetStorageServerVersion() != "1.3.1" || d.GetAgentVersion() != "latest" {
		t.Fatalf("agent registering after set-version got storage-server %q agent %q, want 1.3.1 and latest", d.GetStorageServerVersion(), d.GetAgentVersion())
	}

	dead := testutil.FreeAddr(t)
	at := map[string]string{"SUTRA_MASTER": m.grpcAddr}
	cases := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"no version", at, []string{"agents", "set-version", "agent-1"}, exitUsage, "give --storage-server V, --agent V or both"},
		{"bad agent version", at, []string{"agents", "set-version", "--agent", "1.2"}, exitUsage, `--agent "1.2" is not "latest" or a version like 1.2.3`},
		{"bad storage version", at, []string{"agents", "set-version", "--storage-server", "v1.2.3"}, exitUsage, "--storage-server"},
		{"two ids", at, []string{"agents", "set-version", "a", "b", "--agent", "1.0.0"}, exitUsage, "at most one agent id"},
		{"unknown flag", at, []string{"agents", "set-version", "--version", "1.0.0"}, exitUsage, "flag provided but not defined"},
		{"unknown agent", at, []string{"agents", "set-version", "ghost", "--agent", "1.0.0"}, exitNotFound, `agent "ghost" is not registered`},
		{"bad agent id", at, []string{"agents", "set-version", "a/b", "--agent", "1.0.0"}, exitUsage, ""},
		{"unreachable master", map[string]string{"SUTRA_MASTER": dead}, []string{"agents", "set-version", "--agent", "1.0.0"}, exitUnavailable, "cannot reach master at " + dead},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"SUTRA_DATA_DIR": m.dataDir}
			maps.Copy(env, c.env)
			r := sutraEnv(t, env, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
				t.Fatalf("sutra %v: exit %d stderr %q; want exit %d and stderr containing %q", c.args, r.code, r.stderr, c.code, c.stderr)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Fatalf("error is not one line: %q", r.stderr)
			}
		})
	}
	r = sutraEnv(t, nil, "help")
	r.want(t, 0, "agents set-version [ID] [--storage-server V] [--agent V]")
}

func TestCLIAgentsUpgradeColumn(t *testing.T) {
	m := startMaster(t)
	ctx := context.Background()
	up := &gridv1.UpgradeStatus{Phase: "rolled_back", FromVersion: "1.1.0", ToVersion: "1.2.0", Message: "rolled back to 1.1.0"}
	if _, err := m.enroll(t, "agent-u").RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "agent-u", Platform: "linux", Arch: "x86_64", AgentVersion: "1.1.0", MaxStorageNodes: 1, Upgrade: up}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.enroll(t, "agent-v").RegisterAgent(ctx, &gridv1.RegisterAgentRequest{AgentId: "agent-v", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 1}); err != nil {
		t.Fatal(err)
	}
	r := m.sutra(t, "agents")
	r.want(t, 0, "UPGRADE")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	col := strings.Index(lines[0], "UPGRADE")
	want := map[string]string{"agent-u": "rolled_back 1.2.0", "agent-v": "-"}
	for _, l := range lines[1:] {
		id := strings.Fields(l)[0]
		if got := strings.TrimSpace(l[col:]); got != want[id] {
			t.Errorf("agents: UPGRADE of %s = %q, want %q\n%s", id, got, want[id], r.stdout)
		}
	}
	r = m.sutra(t, "agents", "agent-u")
	r.want(t, 0, "Upgrade:", "rolled_back 1.1.0 -> 1.2.0 rolled back to 1.1.0")
}
