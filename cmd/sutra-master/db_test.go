package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/internal/enroll"
	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/store"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// TestBackupRunningMaster: `sutra-master backup FILE` against a running
// master (which holds the file lock) writes a file that opens and holds the
// fleet; restore puts it back after the master stopped.
func TestBackupRunningMaster(t *testing.T) {
	dir := t.TempDir()
	httpPort, grpcPort := strconv.Itoa(testutil.FreePort(t)), strconv.Itoa(testutil.FreePort(t))
	e := env(map[string]string{"HTTP_PORT": httpPort, "GRPC_PORT": grpcPort, "BIND_ADDRESS": "127.0.0.1",
		"BINARIES_DIR": filepath.Join(dir, "bin"), "SUTRA_DATA_DIR": filepath.Join(dir, "data")})
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, &out, &out, e) }()
	stopMaster := func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("master: %v\n%s", err, out.String())
		}
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "HTTP binary server started"); {
		if time.Now().After(deadline) {
			t.Fatalf("master did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An enrolled agent registers (issue 12: TLS, its own certificate).
	creds, err := opauth.Load(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	op, err := creds.Dial("127.0.0.1:" + grpcPort)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	jt, err := gridv1.NewGridMasterClient(op).CreateJoinToken(rctx, &gridv1.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(jt.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	res, err := enroll.Enroll(rctx, enroll.Request{Addr: "127.0.0.1:" + grpcPort, Token: tok, AgentID: "backup-agent-1", Hostname: "h1", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("127.0.0.1:"+grpcPort, grpc.WithTransportCredentials(credentials.NewTLS(res.TLSConfig(key))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gridv1.NewGridMasterClient(conn).RegisterAgent(rctx, &gridv1.RegisterAgentRequest{
		AgentId: "backup-agent-1", Hostname: "h1", Platform: "linux", Arch: "x86_64", AgentVersion: "1.0.0", MaxStorageNodes: 2,
	}); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(t.TempDir(), "grid-backup.db")
	var bout bytes.Buffer
	if err := run(context.Background(), []string{"backup", dst}, &bout, &bout, e); err != nil {
		t.Fatalf("backup: %v\n%s", err, bout.String())
	}
	if !strings.Contains(bout.String(), "from the master at http://127.0.0.1:"+httpPort) {
		t.Fatalf("backup output %q: want it to come from the running master", bout.String())
	}
	if data, _ := os.ReadFile(dst); !bytes.Contains(data, []byte("backup-agent-1")) {
		t.Fatal("backup does not hold the registered agent")
	}
	if _, err := store.Verify(dst); err != nil {
		t.Fatalf("backup is not a sound database: %v", err)
	}
	// The route answers an operator on the master's host, and nobody
	// without the operator token.
	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+httpPort+store.BackupPath, nil)
	req.Header.Set("Authorization", "Bearer "+creds.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/backup from loopback with the token = %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://127.0.0.1:" + httpPort + store.BackupPath)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /api/backup without the token = %v %v, want 401", resp, err)
	}
	resp.Body.Close()
	if err := run(context.Background(), []string{"restore", dst}, &bout, &bout, e); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("restore while the master runs = %v, want ErrLocked", err)
	}
	stopMaster()

	// Offline: the same command copies the file itself.
	bout.Reset()
	if err := run(context.Background(), []string{"backup", dst + ".2"}, &bout, &bout, e); err != nil || !strings.Contains(bout.String(), "no master running") {
		t.Fatalf("offline backup = %v: %s", err, bout.String())
	}
	bout.Reset()
	if err := run(context.Background(), []string{"restore", dst}, &bout, &bout, e); err != nil {
		t.Fatalf("restore: %v\n%s", err, bout.String())
	}
	if !strings.Contains(bout.String(), "previous database is kept as") {
		t.Fatalf("restore output %q", bout.String())
	}
	b, err := store.OpenDir(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatalf("open restored database: %v", err)
	}
	_ = b.Close()
}

// TestStartOnDamagedDB: issue 9 item 4 — a master started on a damaged,
// emptied or rolled-back grid.db exits with one line naming the file and
// what to do (today: a panic inside bbolt, a crash loop).
func TestStartOnDamagedDB(t *testing.T) {
	good := t.TempDir()
	b, err := store.OpenDir(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(context.Background(), []store.Op{store.Put(store.TableEvents, []byte("k"), bytes.Repeat([]byte("v"), 20000))}); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	orig, err := os.ReadFile(filepath.Join(good, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"truncated to half": {orig[:len(orig)/2], "damaged"},
		"zeroed pages":      {append(bytes.Clone(orig[:8192]), make([]byte, len(orig)-8192)...), "damaged"},
		"0 bytes":           {nil, "empty (0 bytes)"},
		"undecodable agent": {undecodable(t), "cannot read"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			_ = os.MkdirAll(data, 0o700)
			path := filepath.Join(data, store.FileName)
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := run(context.Background(), nil, &out, &out, env(map[string]string{"HTTP_PORT": "0", "GRPC_PORT": "0",
				"BIND_ADDRESS": "127.0.0.1", "BINARIES_DIR": filepath.Join(dir, "bin"), "SUTRA_DATA_DIR": data}))
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) ||
				!strings.Contains(err.Error(), "sutra-master restore") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("start = %v, want one line naming %s, %q and what to run", err, path, c.want)
			}
			var mout bytes.Buffer
			if err := run(context.Background(), []string{"reset-db", "--data-dir", data}, &mout, &mout, env(nil)); err != nil {
				t.Fatalf("reset-db: %v", err)
			}
			if !strings.Contains(mout.String(), "begins an empty fleet") {
				t.Fatalf("reset-db output %q", mout.String())
			}
		})
	}
}

// undecodable returns a sound database file holding an agent record that is
// not JSON.
func undecodable(t *testing.T) []byte {
	dir := t.TempDir()
	b, err := store.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(context.Background(), []store.Op{store.Put(store.TableAgents, []byte("a1"), []byte("\x00not json"))}); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	data, err := os.ReadFile(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
