package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// sutra rollouts against a master over mTLS: --dry-run prints the plan
// without starting; start prints the id; a second rollout of the artifact
// is refused naming the first; the table, the detail view and -o json
// show it; pause, resume and abort act and name the state; bad flags are
// usage errors.
func TestCLIRollouts(t *testing.T) {
	m := startMaster(t)
	m.simulateAgent(t, "agent-1", 2)
	m.simulateAgent(t, "agent-2", 2)
	m.simulateAgent(t, "agent-3", 2)

	m.sutra(t, "rollouts", "start", "--version", "2.0.0", "--canary", "1", "--waves", "50,100", "--soak", "1h", "--healthy-deadline", "2h", "--progress-deadline", "3h", "--dry-run").
		want(t, 0, "(dry run: not started)", "canary", "agent-1", "agent-2", "agent-3")
	m.sutra(t, "rollouts").want(t, 0, "ID")
	r := m.sutra(t, "rollouts", "start", "--version", "2.0.0", "--agents", "agent-1,agent-2", "--soak", "1h", "--healthy-deadline", "2h", "--progress-deadline", "3h")
	r.want(t, 0)
	id := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(id, "ro-") {
		t.Fatalf("start printed %q", r.stdout)
	}
	r = m.sutra(t, "rollouts", "start", "--version", "2.0.1")
	if r.code == 0 || !strings.Contains(r.stderr, id) {
		t.Fatalf("second rollout: exit %d, stderr %q", r.code, r.stderr)
	}
	m.sutra(t, "rollouts").want(t, 0, id, "storage-server", "2.0.0")
	m.sutra(t, "rollouts", id).want(t, 0, "rollout "+id, "agent-1", "agent-2")
	out := m.sutra(t, "-o", "json", "rollouts", id)
	out.want(t, 0)
	var got struct {
		ID     string `json:"id"`
		Agents []struct {
			AgentID string `json:"agent_id"`
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(out.stdout), &got); err != nil || got.ID != id || len(got.Agents) != 2 {
		t.Fatalf("-o json: %v %q", err, out.stdout)
	}
	m.sutra(t, "rollouts", "pause", id).want(t, 0, "paused")
	m.sutra(t, "rollouts", "resume", id).want(t, 0)
	m.sutra(t, "rollouts", "abort", id).want(t, 0, "aborted")
	m.sutra(t, "events", "-n", "50").want(t, 0, "RolloutAborted", "operator@127.0.0.1")
	for _, args := range [][]string{
		{"rollouts", "start"},
		{"rollouts", "start", "--version", "1.0.0", "--waves", "0,100"},
		{"rollouts", "start", "--version", "1.0.0", "--selector", "novalue"},
		{"rollouts", "pause"},
		{"rollouts", "a", "b"},
	} {
		if r := m.sutra(t, args...); r.code != exitUsage {
			t.Errorf("sutra %q: exit %d, want %d (usage); stderr %q", args, r.code, exitUsage, r.stderr)
		}
	}
}
