package platform

import "testing"

func TestFromGo(t *testing.T) {
	tests := []struct{ goos, goarch, platform, arch string }{
		{"linux", "amd64", "linux", "x86_64"},
		{"linux", "arm64", "linux", "aarch64"},
		{"darwin", "arm64", "darwin", "aarch64"},
		{"windows", "386", "windows", "x86"},
		{"linux", "arm", "linux", "arm"},
	}
	for _, tt := range tests {
		p, a, err := FromGo(tt.goos, tt.goarch)
		if err != nil || p != tt.platform || a != tt.arch {
			t.Errorf("FromGo(%s, %s) = %s, %s, %v; want %s, %s", tt.goos, tt.goarch, p, a, err, tt.platform, tt.arch)
		}
		goos, goarch, err := ToGo(p, a)
		if err != nil || goos != tt.goos || goarch != tt.goarch {
			t.Errorf("ToGo(%s, %s) = %s, %s, %v; want %s, %s", p, a, goos, goarch, err, tt.goos, tt.goarch)
		}
	}
	for _, bad := range [][2]string{{"plan9", "amd64"}, {"linux", "riscv64"}, {"freebsd", "arm64"}} {
		if _, _, err := FromGo(bad[0], bad[1]); err == nil {
			t.Errorf("FromGo(%s, %s) succeeded, want an error", bad[0], bad[1])
		}
	}
	if _, _, err := ToGo("solaris", "x86_64"); err == nil {
		t.Error("ToGo(solaris, x86_64) succeeded, want an error")
	}
	if _, _, err := Current(); err != nil {
		t.Errorf("Current() on this machine: %v", err)
	}
}
