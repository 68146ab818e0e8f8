package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/state"
	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"github.com/sutragrid/sutra/supervisor"
)

// diagnoseEnv is a real master (gRPC over mutual TLS, HTTP) and an agent
// data dir enrolled with it, a verified cached storage-server, and one
// recorded node whose process runs.
type diagnoseEnv struct {
	root, masterData, agentData, cfg string
	addrs                            master.Addrs
	op                               gridv1.GridMasterClient
	token, opToken, binURL           string
	keyPEM                           []byte
	stopMaster                       func()
}

func newDiagnoseEnv(t *testing.T) *diagnoseEnv { return newDiagnoseEnvOpts(t, false) }

// newDiagnoseEnvOpts is newDiagnoseEnv, with the master's HTTP port on TLS
// (--http-tls --private-downloads) when httpTLS.
func newDiagnoseEnvOpts(t *testing.T, httpTLS bool) *diagnoseEnv {
	t.Helper()
	plat, arch, err := platform.Current()
	if err != nil {
		t.Skip(err)
	}
	e := &diagnoseEnv{root: t.TempDir()}
	bin := filepath.Join(e.root, "bin")
	name := "storage-server-1.0.0-" + plat + "-" + arch
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, name), bytes.Repeat([]byte("storage-server for diagnose "), 500), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(bin, name), old, old); err != nil {
		t.Fatal(err)
	}
	e.masterData = filepath.Join(e.root, "data")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan master.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- master.Run(ctx, master.Options{
			HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", BinariesDir: bin, DataDir: e.masterData,
			ShutdownTimeout: 5 * time.Second, Ready: func(a master.Addrs) { ready <- a },
			HTTPTLS: httpTLS, PrivateDownloads: httpTLS,
		})
	}()
	select {
	case e.addrs = <-ready:
	case err := <-done:
		t.Fatalf("master.Run: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("master not ready within 60s")
	}
	stopped := false
	e.stopMaster = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(e.stopMaster)

	creds, err := opauth.Load(e.masterData)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(e.masterData, "admin.token")); err == nil {
		e.opToken = strings.TrimSpace(string(b))
	}
	conn, err := creds.Dial(e.addrs.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.op = gridv1.NewGridMasterClient(conn)
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	jt, err := e.op.CreateJoinToken(rctx, &gridv1.CreateJoinTokenRequest{Uses: 5})
	if err != nil {
		t.Fatal(err)
	}
	e.token = jt.GetToken()
	tok, err := jointoken.Parse(e.token)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := mtls.NewKey()
	res, err := enroll.Enroll(rctx, enroll.Request{Addr: e.addrs.GRPC, Token: tok, AgentID: "a1", Hostname: "h1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	e.agentData = filepath.Join(e.root, "agent")
	tlsDir := filepath.Join(e.agentData, "tls")
	if err := os.MkdirAll(filepath.Join(e.agentData, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	e.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for f, b := range map[string][]byte{
		"agent.key": e.keyPEM,
		"agent.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.CertChain[0]}),
		"ca.crt":    res.CAPEM,
	} {
		if err := os.WriteFile(filepath.Join(tlsDir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The token stays in the config: diagnose must never show it.
	e.binURL = "http://" + e.addrs.HTTP
	if httpTLS {
		e.binURL = "https://" + e.addrs.HTTP
	}
	e.cfg = writeConfig(t, fmt.Sprintf("[agent]\nagent_id = \"a1\"\nmaster_host = %q\njoin_token = %q\ncache_dir = %q\nagent_data_dir = %q\n[agent.labels]\napi_key = \"label-secret-value\"\n[storage]\nmaster_binary_url = %q\ndata_path = %q\n[logging]\nlevel = \"warn\"\n",
		e.addrs.GRPC, e.token, filepath.Join(e.root, "cache"), e.agentData, e.binURL, filepath.Join(e.root, "nodes")))
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"fetch", "--config", e.cfg, "--version", "1.0.0"}, &stdout, &stderr); err != nil {
		t.Fatalf("sutra-agent fetch: %v\n%s", err, stderr.String())
	}

	// One node whose process runs, with a log that quotes the secrets.
	sleep, err := exec.LookPath("sleep")
	if err != nil || runtime.GOOS == "windows" {
		t.Skip("needs sleep(1)")
	}
	cmd := exec.Command(sleep, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	st, err := supervisor.ProcessStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := supervisor.ProcessExe(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := supervisor.BootID()
	rec := state.Record{Version: 1, Nodes: map[string]state.Node{"n1": {NodeID: "n1", Port: 50051, DataDir: filepath.Join(e.root, "nodes", "n1"),
		PID: cmd.Process.Pid, StartTime: st, BootID: boot, BinaryPath: exe, Version: "1.0.0"}}}
	data, _ := json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(e.agentData, state.FileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	log := fmt.Sprintf("node n1 starting\nsomeone pasted the token %s here\n%snode n1 listening on 50051\n", e.token, e.keyPEM)
	if err := os.WriteFile(filepath.Join(e.agentData, "logs", "n1.log"), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.agentData, "logs", "agent.log"), []byte("agent started\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// diagnoseRun runs `sutra-agent diagnose args` and fails the test when it
// does not return within 30 s (nothing may hang).
func diagnoseRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), append([]string{"diagnose"}, args...), &stdout, &stderr) }()
	select {
	case err := <-done:
		return stdout.String(), err
	case <-time.After(30 * time.Second):
		t.Fatal("sutra-agent diagnose did not return within 30s")
	}
	return "", nil
}

func (e *diagnoseEnv) noSecrets(t *testing.T, what, out string) {
	t.Helper()
	secrets := map[string]string{"join token": e.token, "private key PEM": string(e.keyPEM), "label api_key": "label-secret-value"}
	if e.opToken != "" {
		secrets["operator token"] = e.opToken
	}
	secrets["join token secret"] = e.token[strings.LastIndex(e.token, ".")+1:]
	for _, line := range strings.Split(string(e.keyPEM), "\n") {
		if len(line) > 20 && !strings.HasPrefix(line, "-----") {
			secrets["a line of the private key"] = line
		}
	}
	for name, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s shows the %s", what, name)
		}
	}
}

// Issue 15: on an enrolled agent with its master up, every section is OK
// and the exit status is 0; the text and JSON reports and the bundle never
// show the join token, the operator token or the private key, even when a
// log quotes them; the bundle is a 0600 tar.gz with the reports and logs.
func TestDiagnoseAllOK(t *testing.T) {
	e := newDiagnoseEnv(t)
	bundle := filepath.Join(e.root, "out", "diag.tar.gz")
	if err := os.MkdirAll(filepath.Dir(bundle), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := diagnoseRun(t, "--config", e.cfg, "--bundle", bundle)
	if err != nil {
		t.Fatalf("diagnose on a healthy node = %v, want exit 0\n%s", err, out)
	}
	for _, want := range []string{
		"no problems found",
		"grpc " + e.addrs.GRPC, "grpc health check SERVING with this agent's certificate",
		"GET http://" + e.addrs.HTTP + "/api/binaries: 200 OK",
		"issued by the pinned CA: true",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose output lacks %q\n%s", want, out)
		}
	}
	for _, want := range []string{"sutra://agent/a1", "storage-server 1.0.0", "checksum OK", "n1 port 50051", ": alive", "node n1 listening on 50051", "renewal due:"} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose output lacks %q\n%s", want, out)
		}
	}
	if !strings.Contains(out, "agent.join_token") || !strings.Contains(out, "<redacted>") {
		t.Errorf("diagnose output does not show agent.join_token as <redacted>\n%s", out)
	}
	e.noSecrets(t, "diagnose output", out)

	js, err := diagnoseRun(t, "--config", e.cfg, "-o", "json")
	if err != nil {
		t.Fatalf("diagnose -o json = %v", err)
	}
	var rep struct {
		Problems []string `json:"problems"`
		Master   []struct {
			Name string
			OK   bool
		} `json:"master"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("diagnose -o json is not JSON: %v\n%s", err, js)
	}
	if len(rep.Problems) != 0 || len(rep.Master) != 2 || !rep.Master[0].OK || !rep.Master[1].OK {
		t.Errorf("diagnose -o json: problems %q, master %+v; want none and both ports OK", rep.Problems, rep.Master)
	}
	e.noSecrets(t, "diagnose -o json", js)

	fi, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("bundle mode %v, want 0600", fi.Mode().Perm())
	}
	files := readBundle(t, bundle)
	for _, want := range []string{"report.txt", "report.json", "logs/n1.log", "logs/agent.log"} {
		if _, ok := files[want]; !ok {
			t.Errorf("bundle lacks %s (has %v)", want, keys(files))
		}
	}
	if !strings.Contains(files["logs/n1.log"], "node n1 listening on 50051") || !strings.Contains(files["logs/n1.log"], "<redacted>") {
		t.Errorf("bundle logs/n1.log = %q, want the log with its secrets redacted", files["logs/n1.log"])
	}
	for name, body := range files {
		e.noSecrets(t, "bundle file "+name, body)
	}
	raw, _ := os.ReadFile(bundle)
	e.noSecrets(t, "bundle archive", string(raw))
}

func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("bundle is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("bundle is not a valid tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = string(b)
	}
	return files
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// Issue 15: what is wrong is named, and the exit status is 1 with the
// problems listed: a revoked agent, a CA that is not the master's, an
// expired certificate, a master that is down (the gRPC port and
// "connection refused").
func TestDiagnoseNamesFailures(t *testing.T) {
	e := newDiagnoseEnv(t)
	tlsDir := filepath.Join(e.agentData, "tls")
	swap := func(t *testing.T, file string, data []byte) {
		t.Helper()
		p := filepath.Join(tlsDir, file)
		old, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(p, old, 0o600) })
	}
	wantProblem := func(t *testing.T, wants ...string) string {
		t.Helper()
		out, err := diagnoseRun(t, "--config", e.cfg)
		if !errors.Is(err, errProblems) {
			t.Fatalf("diagnose = %v, want exit 1 (problems)\n%s", err, out)
		}
		_, problems, _ := strings.Cut(out, "\nproblems:\n")
		for _, w := range wants {
			if !strings.Contains(problems, w) {
				t.Errorf("problems lack %q:\n%s", w, problems)
			}
		}
		e.noSecrets(t, "diagnose output", out)
		return out
	}

	t.Run("wrong CA", func(t *testing.T) {
		otherCA, _ := selfSignedCA(t)
		swap(t, "ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherCA.Raw}))
		wantProblem(t, "master grpc port "+e.addrs.GRPC+": TLS: unknown CA", "not issued by the pinned CA")
	})

	t.Run("expired certificate", func(t *testing.T) {
		caCert, caKey := masterCA(t, e.masterData)
		keyBlock, _ := pem.Decode(e.keyPEM)
		key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "a1"},
			NotBefore: time.Now().Add(-3 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			URIs: []*url.URL{mtls.AgentURI("a1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.(crypto.Signer).Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		swap(t, "agent.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		out := wantProblem(t, "the agent certificate expired at", "master grpc port "+e.addrs.GRPC+": TLS:")
		if !strings.Contains(out, "expired") || !strings.Contains(out, "expired certificate") {
			t.Errorf("diagnose does not name the expired certificate on the gRPC check:\n%s", out)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := e.op.RevokeAgent(ctx, &gridv1.RevokeAgentRequest{AgentId: "a1", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, "master grpc port "+e.addrs.GRPC+": auth: this agent's certificate was revoked")
		if _, err := e.op.UnrevokeAgent(ctx, &gridv1.UnrevokeAgentRequest{AgentId: "a1"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("master down", func(t *testing.T) {
		e.stopMaster()
		wantProblem(t, "master grpc port "+e.addrs.GRPC+": TCP connect: connection refused",
			"master http port http://"+e.addrs.HTTP+": GET http://"+e.addrs.HTTP+"/api/binaries: connection refused")
	})
}

// A FIFO where the node's log, the node record, the upgrade state and the
// agent log should be is reported, and diagnose does not hang on it.
func TestDiagnoseFIFONoHang(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no FIFOs")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "agent")
	if err := os.MkdirAll(filepath.Join(data, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	rec := `{"version":1,"nodes":{"n1":{"node_id":"n1","port":50051,"data_dir":"/nonexistent"}}}`
	if err := os.WriteFile(filepath.Join(data, state.FileName), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(data, "logs", "n1.log"), filepath.Join(data, "logs", "agent.log"), filepath.Join(data, "upgrade.json")} {
		if err := testutil.Mkfifo(p, 0o600); err != nil {
			t.Skip(err)
		}
	}
	cfg := writeConfig(t, fmt.Sprintf("[agent]\nmaster_host = \"127.0.0.1:1\"\ncache_dir = %q\nagent_data_dir = %q\n[storage]\nmaster_binary_url = \"http://127.0.0.1:1\"\ndata_path = %q\n[logging]\nlevel = \"warn\"\n",
		filepath.Join(dir, "cache"), data, filepath.Join(dir, "nodes")))
	bundle := filepath.Join(dir, "b.tar.gz")
	out, err := diagnoseRun(t, "--config", cfg, "--bundle", bundle)
	if !errors.Is(err, errProblems) {
		t.Fatalf("diagnose = %v, want problems\n%s", err, out)
	}
	for _, want := range []string{"node n1 log: " + filepath.Join(data, "logs", "n1.log") + ": not a regular file", "agent log", "upgrade state"} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose output lacks %q\n%s", want, out)
		}
	}
	files := readBundle(t, bundle)
	if _, ok := files["logs/n1.log"]; ok {
		t.Error("the bundle holds the FIFO n1.log")
	}
	if !strings.Contains(files["report.txt"], "skipped "+filepath.Join(data, "logs", "n1.log")) {
		t.Errorf("report.txt does not note the skipped FIFO:\n%s", files["report.txt"])
	}
}

func selfSignedCA(t *testing.T) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// masterCA loads the master's CA certificate and key from its data dir.
func masterCA(t *testing.T, dataDir string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	var crt, key []byte
	_ = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			switch d.Name() {
			case "ca.crt":
				crt, _ = os.ReadFile(p)
			case "ca.key":
				key, _ = os.ReadFile(p)
			}
		}
		return nil
	})
	cb, _ := pem.Decode(crt)
	kb, _ := pem.Decode(key)
	if cb == nil || kb == nil {
		t.Fatalf("no ca.crt/ca.key under %s", dataDir)
	}
	c, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var k any
	if k, err = x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
		if k, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			t.Fatalf("master CA key: %v", err)
		}
	}
	return c, k.(crypto.Signer)
}

// `sutra-agent --help` documents diagnose and its flags; a bad flag is a
// usage error (exit 2).
func TestDiagnoseHelpAndUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sutra-agent diagnose", "--bundle FILE", "-o text|json", "--timeout"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, args := range [][]string{{"-o", "yaml"}, {"extra"}, {"--timeout", "0s"}, {"--nope"}} {
		if err := run(context.Background(), append([]string{"diagnose"}, args...), &stdout, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("diagnose %q = %v, want a usage error", args, err)
		}
	}
}

// With the master's HTTP port on TLS and private downloads, the HTTP check
// goes over https with the pinned CA and the agent's certificate; an
// http:// master_binary_url is named as the problem.
func TestDiagnoseHTTPS(t *testing.T) {
	e := newDiagnoseEnvOpts(t, true)
	out, err := diagnoseRun(t, "--config", e.cfg)
	if err != nil || !strings.Contains(out, "GET https://"+e.addrs.HTTP+"/api/binaries: 200 OK") {
		t.Fatalf("diagnose against an https master = %v, want exit 0 and GET https://…/api/binaries 200 OK\n%s", err, out)
	}
	body, _ := os.ReadFile(e.cfg)
	plain := writeConfig(t, strings.Replace(string(body), e.binURL, "http://"+e.addrs.HTTP, 1))
	out, err = diagnoseRun(t, "--config", plain)
	if !errors.Is(err, errProblems) || !strings.Contains(out, "master http port http://"+e.addrs.HTTP) || !strings.Contains(out, "use https://") {
		t.Fatalf("diagnose with http:// against an https master = %v, want the http port named\n%s", err, out)
	}
}
