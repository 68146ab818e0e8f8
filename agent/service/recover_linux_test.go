package agentsvc

import "testing"

func TestInUnit(t *testing.T) {
	tests := []struct {
		cgroup string
		want   bool
	}{
		{"0::/system.slice/sutra-agent.service\n", true},
		{"12:pids:/system.slice/sutra-agent.service\n1:name=systemd:/system.slice/sutra-agent.service\n0::/\n", true},
		{"0::/system.slice/sutra-agent.service/extra\n", true},
		{"0::/user.slice/user-1000.slice/session-2.scope\n", false},
		{"0::/system.slice/sutra-agent.service.d\n", false},
		{"0::/system.slice/my-sutra-agent.service\n", false},
		{"", false},
		{"garbage", false},
	}
	for _, tt := range tests {
		if got := inUnit(tt.cgroup, "sutra-agent.service"); got != tt.want {
			t.Errorf("inUnit(%q) = %v, want %v", tt.cgroup, got, tt.want)
		}
	}
}
