//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Storage-server versions the soak rolls between.
const (
	vOld = "1.0.0"
	vNew = "1.0.1"
)

// binaries are the programs built from the tree.
type binaries struct {
	master, agent, cli string
	server             map[string]string // version -> file
	etcd               []string          // command to run one etcd member ("" = none)
	etcdKind           string            // "etcdmember" or "etcd"
}

// build compiles the grid's programs into dir; -ha also etcdmember (or
// falls back to the etcd on PATH).
func build(ctx context.Context, dir string, ha bool) (binaries, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return binaries{}, fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	goBuild := func(version, out string, pkgs ...string) error {
		args := []string{"build", "-trimpath", "-ldflags", "-X github.com/sutragrid/sutra/internal/version.Version=" + version, "-o", out}
		cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, b)
		}
		return nil
	}
	b := binaries{
		master: filepath.Join(dir, "sutra-master"), agent: filepath.Join(dir, "sutra-agent"), cli: filepath.Join(dir, "sutra"),
		server: map[string]string{},
	}
	if err := goBuild("0.9.0", dir+string(filepath.Separator), "./cmd/sutra-master", "./cmd/sutra-agent", "./cmd/sutra"); err != nil {
		return b, err
	}
	for _, v := range []string{vOld, vNew} {
		p := filepath.Join(dir, "storage-server-"+v)
		if err := goBuild(v, p, "./cmd/storage-server"); err != nil {
			return b, err
		}
		b.server[v] = p
	}
	if ha {
		if _, err := os.Stat(filepath.Join(root, "internal", "etcdtest", "etcdmember")); err == nil {
			p := filepath.Join(dir, "etcdmember")
			if err := goBuild("0.0.0", p, "./internal/etcdtest/etcdmember"); err != nil {
				return b, err
			}
			b.etcd, b.etcdKind = []string{p}, "etcdmember"
		} else if p, err := exec.LookPath("etcd"); err == nil {
			b.etcd, b.etcdKind = []string{p}, "etcd"
		} else {
			return b, fmt.Errorf("-ha needs internal/etcdtest/etcdmember or an etcd on PATH")
		}
	}
	return b, nil
}
