package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

type demoOptions struct {
	Dir, BinDir        string
	GRPCPort, HTTPPort int
	Agents             int
	NodesPerAgent      int
	Version            string
	Exit               bool
}

// child is a process the demo started and must stop.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func run(ctx context.Context, o demoOptions) error {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(o.BinDir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clean %s: %w", dir, err)
	}
	binaries := filepath.Join(dir, "binaries")
	logs := filepath.Join(dir, "logs")
	for _, d := range []string{binaries, logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, name := range []string{"sutra-master", "sutra-agent", "sutra"} {
		if _, err := os.Stat(filepath.Join(bin, name+exeSuffix())); err != nil {
			return fmt.Errorf("%s not built: run `make build` first (or `make demo`, which does): %w", name, err)
		}
	}

	step("Staging storage-server %s for every platform in %s", o.Version, rel(binaries))
	if err := stageStorageServers(ctx, binaries, o.Version); err != nil {
		return err
	}
	pubKey, err := signStaged(ctx, bin, dir, binaries)
	if err != nil {
		return err
	}

	var children []*child
	defer func() { stopAll(children) }()

	masterAddr := fmt.Sprintf("localhost:%d", o.GRPCPort)
	httpURL := fmt.Sprintf("http://localhost:%d", o.HTTPPort)
	step("Starting the master (gRPC %d, HTTP %d)", o.GRPCPort, o.HTTPPort)
	masterData := filepath.Join(dir, "master")
	master, err := start(ctx, "master", filepath.Join(bin, "sutra-master"), nil, []string{
		"BINARIES_DIR=" + binaries,
		"SUTRA_DATA_DIR=" + masterData,
		fmt.Sprintf("GRPC_PORT=%d", o.GRPCPort),
		fmt.Sprintf("HTTP_PORT=%d", o.HTTPPort),
	}, filepath.Join(logs, "master.log"), true)
	if err != nil {
		return err
	}
	children = append(children, master)
	if err := waitHTTP(ctx, httpURL+"/api/binaries", master, 30*time.Second); err != nil {
		return fmt.Errorf("master did not come up (see %s): %w", rel(filepath.Join(logs, "master.log")), err)
	}

	// The operator's credentials, which the master wrote at its first start
	// (the same files `sutra` finds when run in the master's directory).
	creds, err := opauth.Load(masterData)
	if err != nil {
		return fmt.Errorf("operator credentials of the master: %w", err)
	}
	conn, err := creds.Dial(masterAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	grid := gridv1.NewGridMasterClient(conn)
	caFile := filepath.Join(masterData, filepath.FromSlash(opauth.CAFile))
	cliEnv := []string{"SUTRA_MASTER=" + masterAddr, "SUTRA_TOKEN=" + creds.Token, "SUTRA_CACERT=" + caFile}

	// One join token enrolls every demo agent (they get it through
	// SUTRA_JOIN_TOKEN, so it is not written in their config files).
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	joined, err := grid.CreateJoinToken(tctx, &gridv1.CreateJoinTokenRequest{Uses: uint32(max(o.Agents, 1)), TtlSecs: 3600, Labels: map[string]string{"demo": "true"}})
	tcancel()
	if err != nil {
		return fmt.Errorf("create a join token: %w", err)
	}
	step("Created join token %s for %d agents (sutra tokens create)", joined.GetInfo().GetId(), o.Agents)

	var agentIDs []string
	for i := 1; i <= o.Agents; i++ {
		id := fmt.Sprintf("agent-%d", i)
		agentIDs = append(agentIDs, id)
		cfg, err := writeAgentConfig(dir, id, masterAddr, httpURL, 50050+100*(i-1), pubKey)
		if err != nil {
			return err
		}
		step("Starting %s (config %s)", id, rel(cfg))
		a, err := start(ctx, id, filepath.Join(bin, "sutra-agent"), []string{"run", "--config", cfg}, []string{"SUTRA_JOIN_TOKEN=" + joined.GetToken()},
			filepath.Join(logs, id+".log"), false)
		if err != nil {
			return err
		}
		children = append(children, a)
	}
	if err := waitAgents(ctx, grid, agentIDs, 60*time.Second); err != nil {
		return fmt.Errorf("agents did not enroll and register (see %s): %w", rel(logs), err)
	}

	var nodeIDs []string
	for _, id := range agentIDs {
		for n := 0; n < o.NodesPerAgent; n++ {
			resp, err := grid.SpawnStorageNode(ctx, &gridv1.SpawnStorageNodeRequest{AgentId: id})
			if err != nil {
				return fmt.Errorf("spawn a node on %s: %w", id, err)
			}
			nodeIDs = append(nodeIDs, resp.GetNode().GetNodeId())
			step("Spawn requested: node %s on %s", resp.GetNode().GetNodeId(), id)
		}
	}
	endpoints, err := waitNodesRunning(ctx, grid, nodeIDs, 90*time.Second)
	if err != nil {
		return fmt.Errorf("nodes did not become healthy (see %s): %w", rel(logs), err)
	}
	if len(endpoints) > 0 {
		if err := putAndGet(ctx, endpoints[0]); err != nil {
			return err
		}
	}

	fmt.Println()
	showCommand(ctx, cliEnv, filepath.Join(bin, "sutra"), "--master", masterAddr, "status")
	showCommand(ctx, cliEnv, filepath.Join(bin, "sutra"), "--master", masterAddr, "agents")
	showCommand(ctx, cliEnv, filepath.Join(bin, "sutra"), "--master", masterAddr, "nodes")
	showCommand(ctx, cliEnv, filepath.Join(bin, "sutra"), "--master", masterAddr, "--http", httpURL, "binaries")
	printTryThis(bin, masterAddr, httpURL, o.Version, endpoints, logs, creds.Token, caFile)

	if o.Exit {
		step("--exit given: stopping the grid")
		return nil
	}
	step("Grid is up. Press Ctrl-C to stop everything.")
	select {
	case <-ctx.Done():
	case <-master.done:
		return errors.New("the master exited unexpectedly (see " + rel(filepath.Join(logs, "master.log")) + ")")
	}
	fmt.Println()
	step("Stopping: agents first (they stop their nodes gracefully), then the master")
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func rel(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
	}
	return p
}

func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}

// stageStorageServers cross-compiles cmd/storage-server for every platform pair,
// two builds at a time, named as the design document says.
func stageStorageServers(ctx context.Context, dst, version string) error {
	type target struct{ goos, goarch string }
	targets := []target{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}, {"windows", "amd64"}, {"windows", "arm64"}}
	sem := make(chan struct{}, 2)
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			plat, arch, err := platform.FromGo(t.goos, t.goarch)
			if err != nil {
				errs[i] = err
				return
			}
			name := fmt.Sprintf("storage-server-%s-%s-%s", version, plat, arch)
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
				"-ldflags", "-s -w -X github.com/sutragrid/sutra/internal/version.Version="+version,
				"-o", filepath.Join(dst, name), "./cmd/storage-server")
			cmd.Env = append(os.Environ(), "GOOS="+t.goos, "GOARCH="+t.goarch, "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("build %s: %w\n%s", name, err, out)
				return
			}
			fmt.Printf("    staged %s\n", name)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// signStaged makes a throwaway release key (unencrypted, in the demo's
// directory: a real key is made once, offline, with a password) and signs
// the staged binaries with the sutra CLI, as a release would. It returns the
// public key line the agents are configured with.
func signStaged(ctx context.Context, bin, dir, binaries string) (string, error) {
	keyDir := filepath.Join(dir, "release-key")
	step("Signing them with a throwaway release key (sutra release keygen --no-password, sutra release sign)")
	sutra := filepath.Join(bin, "sutra"+exeSuffix())
	if out, err := exec.CommandContext(ctx, sutra, "release", "keygen", "--out", keyDir, "--no-password").CombinedOutput(); err != nil {
		return "", fmt.Errorf("sutra release keygen: %w\n%s", err, out)
	}
	entries, err := os.ReadDir(binaries)
	if err != nil {
		return "", err
	}
	args := []string{"release", "sign", "--key", filepath.Join(keyDir, release.PrivateKeyFile)}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), release.SignatureSuffix) && !strings.HasPrefix(e.Name(), ".") {
			args = append(args, filepath.Join(binaries, e.Name()))
		}
	}
	if out, err := exec.CommandContext(ctx, sutra, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("sutra release sign: %w\n%s", err, out)
	}
	_, line, err := release.ReadPublicKeyFile(filepath.Join(keyDir, release.PublicKeyFile))
	if err != nil {
		return "", err
	}
	fmt.Printf("    public key %s: agents get [security] release_public_keys = [%q]\n", rel(filepath.Join(keyDir, release.PublicKeyFile)), line)
	return line, nil
}

func writeAgentConfig(dir, id, masterAddr, httpURL string, portStart int, releaseKey string) (string, error) {
	home := filepath.Join(dir, id)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(agentConfigTemplate, id, masterAddr, filepath.ToSlash(filepath.Join(home, "cache")),
		filepath.ToSlash(filepath.Join(home, "state")), httpURL, filepath.ToSlash(filepath.Join(home, "nodes")), portStart, releaseKey)
	path := filepath.Join(home, "agent-config.toml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

func start(ctx context.Context, name, path string, args, env []string, logPath string, echo bool) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	setProcessGroup(cmd)
	if echo {
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				line := sc.Text()
				fmt.Fprintln(logFile, line)
				if !strings.HasPrefix(line, "time=") && !strings.HasPrefix(line, "{") {
					fmt.Printf("    [%s] %s\n", name, line)
				}
			}
			_ = logFile.Close()
		}()
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		c := &child{name: name, cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); _ = pw.Close(); close(c.done) }()
		return c, nil
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = logFile.Close(); close(c.done) }()
	return c, nil
}

// stopAll stops agents before the master so that they can stop their nodes
// while the master still answers, each with a bounded grace period.
func stopAll(children []*child) {
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		select {
		case <-c.done:
			continue
		default:
		}
		terminate(c.cmd)
		select {
		case <-c.done:
			fmt.Printf("    stopped %s\n", c.name)
		case <-time.After(20 * time.Second):
			kill(c.cmd)
			<-c.done
			fmt.Printf("    killed %s (did not stop within 20s)\n", c.name)
		}
	}
}

func waitHTTP(ctx context.Context, url string, c *child, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return fmt.Errorf("%s exited", c.name)
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("no answer from %s within %s", url, timeout)
}

func waitAgents(ctx context.Context, grid gridv1.GridMasterClient, ids []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := grid.ListAgents(ctx, &gridv1.ListAgentsRequest{})
		if err == nil {
			healthy := map[string]bool{}
			for _, a := range resp.GetAgents() {
				healthy[a.GetAgentId()] = a.GetHealth() == gridv1.AgentHealth_AGENT_HEALTH_HEALTHY
			}
			missing := 0
			for _, id := range ids {
				if !healthy[id] {
					missing++
				}
			}
			if missing == 0 {
				step("%d agents registered", len(ids))
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not all of %v registered within %s", ids, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitNodesRunning(ctx context.Context, grid gridv1.GridMasterClient, ids []string, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		var endpoints []string
		for _, id := range ids {
			n, err := grid.GetStorageNodeStatus(ctx, &gridv1.GetStorageNodeStatusRequest{NodeId: id})
			if err == nil && n.GetStatus().GetState() == gridv1.NodeState_NODE_STATE_RUNNING {
				endpoints = append(endpoints, n.GetStatus().GetEndpoint())
			}
		}
		if len(endpoints) == len(ids) {
			step("%d storage nodes running: %s", len(ids), strings.Join(endpoints, ", "))
			return endpoints, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d nodes running after %s", len(endpoints), len(ids), timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func putAndGet(ctx context.Context, endpoint string) error {
	url := "http://" + endpoint + "/kv/hello"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader("world"))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("write a key through %s: %w", endpoint, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("PUT %s: %s", url, resp.Status)
	}
	resp, err = http.Get(url)
	if err != nil {
		return fmt.Errorf("read the key back: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, []byte("world")) {
		return fmt.Errorf("GET %s = %s %q, want 200 \"world\"", url, resp.Status, body)
	}
	step("Wrote and read back key \"hello\" = %q through node %s", body, endpoint)
	return nil
}

func showCommand(ctx context.Context, env []string, path string, args ...string) {
	fmt.Printf("$ sutra %s\n", strings.Join(args[2:], " "))
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	_ = cmd.Run()
	fmt.Println()
}

func printTryThis(bin, masterAddr, httpURL, version string, endpoints []string, logs, token, caFile string) {
	plat, arch, _ := platform.Current()
	node := "<node-endpoint>"
	if len(endpoints) > 0 {
		node = endpoints[0]
	}
	fmt.Printf(`Try it (in another terminal):
  export PATH=%s:$PATH SUTRA_MASTER=%s
  export SUTRA_TOKEN=%s SUTRA_CACERT=%s
  sutra status
  sutra agents
  sutra nodes
  sutra nodes spawn --wait
  sutra events -f
  curl %s/api/binaries
  curl %s/api/binaries/latest/%s/%s
  curl %s/api/binaries/%s/linux/x86_64
  curl -O %s/binaries/storage-server-%s-linux-x86_64
  curl -H "Authorization: Bearer $SUTRA_TOKEN" %s/api/agents
  curl -X PUT --data 'bar' http://%s/kv/foo && curl http://%s/kv/foo
  grpcurl -cacert $SUTRA_CACERT -H "authorization: Bearer $SUTRA_TOKEN" %s list
  sutra tokens create --uses 1    (a join token for one more agent: sutra-agent run --join-token ...)
  sutra binaries                  (SIGNED: the demo signed them with a throwaway release key)
  sutra rollouts start --version %s --canary 1 --waves 50,100 --soak 5s --dry-run
  curl -H "Authorization: Bearer $SUTRA_TOKEN" %s/metrics | grep ^sutra_agents
  dashboard: %s/ui/  (log in with the operator token above)

Logs: %s
`, bin, masterAddr, token, caFile, httpURL, httpURL, plat, arch, httpURL, version, httpURL, version, httpURL, node, node, masterAddr, version, httpURL, httpURL, rel(logs))
}
