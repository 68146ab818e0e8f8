package controlplane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/jointoken"
	"github.com/sutragrid/sutra/internal/mtls"
)

// Zero-touch bootstrap: the token `service install --join-token` left in
// {agent_data_dir}/join-token (0600) enrolls the agent at its next start,
// with no token in the config, the environment or the command line, and is
// deleted once the agent enrolled; the next start needs neither.
func TestAgentEnrollsWithTheJoinTokenFileThenDeletesIt(t *testing.T) {
	ca := newTestCA(t)
	m := &enrollMaster{ca: ca, t: t}
	addr := startTLSFakeMaster(t, ca, m)
	tok, err := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	path, err := WriteJoinTokenFile(data, tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(data, JoinTokenFile) {
		t.Fatalf("token file at %s, want %s", path, filepath.Join(data, JoinTokenFile))
	}
	if fi, err := os.Stat(path); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Fatalf("token file: %v %v, want mode 0600", fi, err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != tok.String() {
		t.Fatal("the token file does not hold the token")
	}

	registered := make(chan struct{}, 4)
	o := enrollOptions(addr, filepath.Join(data, "tls"), "", registered)
	o.JoinTokenFile = path
	c, err := New(o)
	if err != nil {
		t.Fatalf("New with only the token file: %v", err)
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
	if n := m.enrollCount(); n != 1 || m.enrolls[0].GetTokenId() != tok.ID {
		t.Fatalf("%d Enroll calls, want 1 with token %s", n, tok.ID)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the join token file is still there after enrollment (err %v)", err)
	}
	// The next start needs no token.
	if _, err := New(o); err != nil {
		t.Fatalf("New after enrollment without the file: %v", err)
	}
}

// Precedence: a token given directly (run --join-token, SUTRA_JOIN_TOKEN,
// agent.join_token all arrive as Options.JoinToken) wins over the file; the
// file is still deleted after enrollment.
func TestJoinTokenOptionWinsOverTheFile(t *testing.T) {
	ca := newTestCA(t)
	m := &enrollMaster{ca: ca, t: t}
	addr := startTLSFakeMaster(t, ca, m)
	direct, _ := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	inFile, _ := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
	data := t.TempDir()
	path, err := WriteJoinTokenFile(data, inFile.String())
	if err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{}, 4)
	o := enrollOptions(addr, filepath.Join(data, "tls"), direct.String(), registered)
	o.JoinTokenFile = path
	c, err := New(o)
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
	if got := m.enrolls[0].GetTokenId(); got != direct.ID {
		t.Fatalf("enrolled with token %s, want the direct one %s", got, direct.ID)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the join token file is still there after enrollment (err %v)", err)
	}
}

// A bad token file stops an agent that has no certificate, with an error
// that never quotes the file's contents; an enrolled agent ignores it.
func TestBadJoinTokenFile(t *testing.T) {
	ca := newTestCA(t)
	secretish := "SUTRA1.not-a-fingerprint.id.topsecretvalue"
	data := t.TempDir()
	path := filepath.Join(data, JoinTokenFile)
	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"garbage", secretish, 0o600, "malformed"},
		{"too big", strings.Repeat("x", 5000), 0o600, "larger than"},
		{"world readable", "", 0o644, "readable by others"},
	} {
		content := c.content
		if content == "" {
			tok, _ := jointoken.Generate(mtls.Fingerprint(ca.cert.Raw))
			content = tok.String()
		}
		if runtime.GOOS == "windows" && c.mode != 0o600 {
			continue
		}
		if err := os.WriteFile(path, []byte(content), c.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		o := enrollOptions("127.0.0.1:1", filepath.Join(data, "tls"), "", nil)
		o.JoinTokenFile = path
		_, err := New(o)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "topsecretvalue") {
			t.Errorf("%s: New = %v, want an error with %q that does not quote the file", c.name, err, c.want)
		}
	}
	// Enrolled already: the bad file does not stop the agent.
	ca.writeAgent(t, filepath.Join(data, "tls"), "a1")
	o := enrollOptions("127.0.0.1:1", filepath.Join(data, "tls"), "", nil)
	o.JoinTokenFile = path
	if _, err := New(o); err != nil {
		t.Errorf("enrolled agent with a bad token file: New = %v", err)
	}
	// No file, no certificate, no token: the one-line hint.
	o = enrollOptions("127.0.0.1:1", filepath.Join(t.TempDir(), "tls"), "", nil)
	o.JoinTokenFile = filepath.Join(t.TempDir(), JoinTokenFile)
	if _, err := New(o); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("New without any credential = %v, want ErrNoCredentials", err)
	}
}

func FuzzReadJoinTokenFile(f *testing.F) {
	tok, _ := jointoken.Generate(strings.Repeat("ab", 32))
	for _, s := range []string{tok.String(), tok.String() + "\n", " " + tok.String() + " \r\n", "", "\x00", "SUTRA1....", strings.Repeat("A", 5000), tok.String() + "\n" + tok.String()} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), JoinTokenFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadJoinTokenFile(path)
		if err != nil {
			return
		}
		if _, perr := jointoken.Parse(got); perr != nil {
			t.Fatalf("ReadJoinTokenFile returned an invalid token: %v", perr)
		}
		if !strings.Contains(string(b), got) {
			t.Fatal("ReadJoinTokenFile returned something not in the file")
		}
	})
}
