package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/version"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestHelpNamesEveryFlagAndEnv(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"--help"}, &out, &errb, env(nil))
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help = %v", err)
	}
	for _, want := range []string{
		"--http-port", "env HTTP_PORT, default 7001", "--grpc-port", "env GRPC_PORT, default 7000",
		"--binaries-dir", "env BINARIES_DIR, default ./binaries", "--data-dir", "env SUTRA_DATA_DIR, default ./data",
		"env MAX_CONCURRENT_DOWNLOADS, default 256", "--version",
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, errb.String())
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, &out, &out, env(nil)); err != nil || strings.TrimSpace(out.String()) != version.Version {
		t.Errorf("--version = %q, %v", out.String(), err)
	}
}

func TestBadSettingsAreReportedTogether(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--grpc-port", "99999"}, &out, &out,
		env(map[string]string{"HTTP_PORT": "web", "MAX_CONCURRENT_DOWNLOADS": "0", "LOG_LEVEL": "loud"}))
	for _, want := range []string{`HTTP_PORT="web"`, `--grpc-port="99999"`, `MAX_CONCURRENT_DOWNLOADS="0"`, `LOG_LEVEL="loud"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run = %v, want it to name %s", err, want)
		}
	}
	if err := run(context.Background(), []string{"extra"}, &out, &out, env(nil)); !errors.Is(err, errUsage) {
		t.Errorf("a stray argument = %v, want a usage error", err)
	}
}

func TestPortInUseNamesTheEnvVar(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var out bytes.Buffer
	dir := t.TempDir()
	err = run(context.Background(), []string{"--bind", "127.0.0.1", "--grpc-port", "0"}, &out, &out,
		env(map[string]string{"HTTP_PORT": port, "BINARIES_DIR": dir + "/b", "SUTRA_DATA_DIR": dir + "/d"}))
	want := "HTTP port " + port + " is in use: set HTTP_PORT (or --http-port) to a free port"
	if err == nil || err.Error() != want {
		t.Errorf("run with HTTP_PORT taken = %v, want %q", err, want)
	}
}
