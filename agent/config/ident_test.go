package config

import (
	"fmt"
	"strings"
	"testing"
)

// Issue 9 item 5: the agent id is checked by the rule the master applies
// (internal/ident), and labels by the master's limits (internal/limits), so
// a config that loads is never refused at registration.
func TestAgentIDAndLabelsFollowTheMastersRules(t *testing.T) {
	for _, id := range []string{".", "..", "-rf", "a.", "_a", "nul", "COM1", "a/b", strings.Repeat("a", 129)} {
		_, err := Parse("a.toml", []byte(fmt.Sprintf("[agent]\nagent_id = %q\n", id)), testEnv(nil))
		if err == nil || !strings.Contains(err.Error(), "agent.agent_id") {
			t.Errorf("agent_id %q: err = %v, want it refused", id, err)
		}
	}
	for _, id := range []string{"host-1", "web.example.com", "A_1"} {
		if _, err := Parse("a.toml", []byte(fmt.Sprintf("[agent]\nagent_id = %q\n", id)), testEnv(nil)); err != nil {
			t.Errorf("agent_id %q: %v", id, err)
		}
	}
	// An invalid hostname as the default agent id is reported too.
	env := testEnv(nil)
	env.Hostname = func() (string, error) { return "-bad-", nil }
	if _, err := Parse("a.toml", nil, env); err == nil || !strings.Contains(err.Error(), "agent.agent_id") {
		t.Errorf("hostname -bad- as agent id: err = %v", err)
	}
	var b strings.Builder
	b.WriteString("[agent]\n[agent.labels]\n")
	for i := range 65 {
		fmt.Fprintf(&b, "k%d = \"v\"\n", i)
	}
	if _, err := Parse("a.toml", []byte(b.String()), testEnv(nil)); err == nil || !strings.Contains(err.Error(), "65 labels") {
		t.Errorf("65 labels: err = %v", err)
	}
	if _, err := Parse("a.toml", []byte("[agent]\n[agent.labels]\nzone = \"a\\u001bb\"\n"), testEnv(nil)); err == nil || !strings.Contains(err.Error(), "agent.labels") {
		t.Errorf("label with ESC: err = %v", err)
	}
}
