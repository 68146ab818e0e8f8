package controlplane

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// keysMaster enrolls like enrollMaster and hands out release public keys.
type keysMaster struct {
	*enrollMaster
	keys []string
}

func (m *keysMaster) Enroll(ctx context.Context, r *gridv1.EnrollRequest) (*gridv1.EnrollResponse, error) {
	resp, err := m.enrollMaster.Enroll(ctx, r)
	if err != nil {
		return nil, err
	}
	resp.ReleasePublicKeys = m.keys
	return resp, nil
}

func pubKey(t *testing.T) string {
	t.Helper()
	pub, _, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub.String()
}

func enrollOnce(t *testing.T, ca *testCA, m gridv1.GridMasterServer, dir string) {
	t.Helper()
	addr := startTLSFakeMaster(t, ca, m)
	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{}, 4)
	c, err := New(enrollOptions(addr, dir, tok.String(), registered))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-registered:
	case err := <-done:
		t.Fatalf("Run returned before registering: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not registered within 30s")
	}
	cancel()
	<-done
	_ = c.Close()
}

// The release keys of the first enrollment are kept (0644); a later
// enrollment never replaces them, and invalid keys are not stored.
func TestEnrollmentReleaseKeysKeptFromTheFirstEnrollment(t *testing.T) {
	ca := newTestCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	first := pubKey(t)
	enrollOnce(t, ca, &keysMaster{enrollMaster: &enrollMaster{ca: ca, t: t}, keys: []string{first}}, dir)
	path := filepath.Join(dir, ReleaseKeysFile)
	got, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(got)) != first {
		t.Fatalf("%s = %q, %v; want the master's key", path, got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	// Enroll again (credentials lost), the master now sends another key.
	for _, f := range []string{KeyFile, CertFile, CAFile} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	enrollOnce(t, ca, &keysMaster{enrollMaster: &enrollMaster{ca: ca, t: t}, keys: []string{pubKey(t)}}, dir)
	if again, _ := os.ReadFile(path); string(again) != string(got) {
		t.Fatalf("a later enrollment replaced the release keys: %q", again)
	}

	dir2 := filepath.Join(t.TempDir(), "tls")
	enrollOnce(t, ca, &keysMaster{enrollMaster: &enrollMaster{ca: ca, t: t}, keys: []string{"RWnot-a-key"}}, dir2)
	if _, err := os.Stat(filepath.Join(dir2, ReleaseKeysFile)); err == nil {
		t.Fatal("invalid release keys from the master were stored")
	}
}
