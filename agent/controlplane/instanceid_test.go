package controlplane

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestLoadInstanceIDIsCreatedOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agent")
	id, replaced, err := LoadInstanceID(dir)
	if err != nil || replaced != "" {
		t.Fatalf("LoadInstanceID(new dir) = %q, %q, %v", id, replaced, err)
	}
	if !validInstanceID(id) {
		t.Errorf("instance id %q is not 32 lowercase hex digits", id)
	}
	fi, err := os.Stat(filepath.Join(dir, InstanceIDFile))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("instance id file mode %v, want 0600", fi.Mode().Perm())
	}
	for range 3 {
		again, _, err := LoadInstanceID(dir)
		if err != nil || again != id {
			t.Fatalf("LoadInstanceID again = %q, %v; want the kept %q", again, err, id)
		}
	}
	other, _, err := LoadInstanceID(t.TempDir())
	if err != nil || other == id {
		t.Errorf("LoadInstanceID(another dir) = %q, %v; want another id than %q", other, err, id)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

// Agents started at once on one data dir agree on one id.
func TestLoadInstanceIDConcurrentCreatorsAgree(t *testing.T) {
	dir := t.TempDir()
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, _, err := LoadInstanceID(dir)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent LoadInstanceID returned different ids: %q", ids)
		}
	}
}

// A file that holds no id is kept aside and replaced, never silently reused.
func TestLoadInstanceIDReplacesAGarbledFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, InstanceIDFile)
	for _, garbage := range []string{"", "not-an-id\n", strings.Repeat("A", 32), strings.Repeat("a", 4096)} {
		if err := os.WriteFile(path, []byte(garbage), 0o600); err != nil {
			t.Fatal(err)
		}
		id, replaced, err := LoadInstanceID(dir)
		if err != nil || !validInstanceID(id) || replaced == "" {
			t.Fatalf("LoadInstanceID(garbled %q) = %q, %q, %v", garbage, id, replaced, err)
		}
		if b, _ := os.ReadFile(replaced); string(b) != garbage {
			t.Errorf("kept copy %s holds %q, want %q", replaced, b, garbage)
		}
	}
	// A directory at the path is moved aside too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if id, replaced, err := LoadInstanceID(dir); err != nil || !validInstanceID(id) || replaced == "" {
		t.Errorf("LoadInstanceID(directory at the path) = %q, %q, %v", id, replaced, err)
	}
}

// A garbled id file's content never appears in the error (the file may be
// a link to a secret).
func TestReadInstanceIDDoesNotQuoteTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), InstanceIDFile)
	if err := os.WriteFile(path, []byte("s3cr3t-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readInstanceID(path); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("readInstanceID(garbled) = %v, want an error without the content", err)
	}
}

// fakeMaster is a real gRPC server on loopback that records registrations
// and refuses them with refuse while it is set.
type fakeMaster struct {
	gridv1.UnimplementedGridMasterServer
	mu     sync.Mutex
	reqs   []*gridv1.RegisterAgentRequest
	refuse error
}

func (m *fakeMaster) RegisterAgent(_ context.Context, r *gridv1.RegisterAgentRequest) (*gridv1.RegisterAgentResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reqs = append(m.reqs, r)
	if m.refuse != nil {
		return nil, m.refuse
	}
	return &gridv1.RegisterAgentResponse{HeartbeatIntervalSecs: 1, Desired: &gridv1.DesiredState{Generation: 1}}, nil
}

func (m *fakeMaster) Heartbeat(context.Context, *gridv1.HeartbeatRequest) (*gridv1.HeartbeatResponse, error) {
	return &gridv1.HeartbeatResponse{Desired: &gridv1.DesiredState{Generation: 1}}, nil
}

func (m *fakeMaster) registrations() []*gridv1.RegisterAgentRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*gridv1.RegisterAgentRequest(nil), m.reqs...)
}

// The instance id goes with every registration. A refusal (another machine
// holds the agent_id) is logged as such and retried with backoff; once the
// clash is resolved the agent registers.
func TestRegistrationSendsInstanceIDAndRetriesARefusal(t *testing.T) {
	id, _, err := LoadInstanceID(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMaster{refuse: status.Error(codes.AlreadyExists, `agent id "a1" is already registered by host "other" (instance 0123)`)}
	ca := newTestCA(t)
	addr := startTLSFakeMaster(t, ca, m)
	tlsDir := filepath.Join(t.TempDir(), "tls")
	ca.writeAgent(t, tlsDir, "a1")
	var logs testutil.SyncBuffer
	registered := make(chan struct{}, 1)
	c, err := New(Options{
		MasterAddr: addr, AgentID: "a1", InstanceID: id, Hostname: "here", TLSDir: tlsDir,
		Report:       func() Report { return Report{} },
		OnDesired:    func(Desired) {},
		OnRegistered: func() { registered <- struct{}{} },
		BackoffMin:   10 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(30 * time.Second)
	for len(m.registrations()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d registration attempts while refused, want retries", len(m.registrations()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "master refused registration") ||
		!strings.Contains(out, "unique agent_id") || !strings.Contains(out, `host \"other\"`) {
		t.Errorf("log does not name the refusal clearly:\n%s", out)
	}
	m.mu.Lock()
	m.refuse = nil
	m.mu.Unlock()
	select {
	case <-registered:
	case <-time.After(30 * time.Second):
		t.Fatal("not registered after the refusal was lifted")
	}
	for i, r := range m.registrations() {
		if r.GetInstanceId() != id || r.GetAgentId() != "a1" {
			t.Errorf("registration %d: agent %q instance %q, want a1 %q", i, r.GetAgentId(), r.GetInstanceId(), id)
		}
	}
}

func TestOptionsRejectAMalformedInstanceID(t *testing.T) {
	o := Options{MasterAddr: "127.0.0.1:1", AgentID: "a", Report: func() Report { return Report{} }, OnDesired: func(Desired) {},
		InstanceID: "../../etc"}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "InstanceID") {
		t.Errorf("Validate(InstanceID ../../etc) = %v, want an InstanceID error", err)
	}
}
