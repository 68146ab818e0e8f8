package pki

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// resumes dials a fresh server built from p (a "restarted master": new
// listener, new tls.Config, nothing shared in memory with the last one)
// with cfg and reports whether the connection resumed a session, after
// reading a byte back so that the server's new ticket reaches cfg's cache.
func resumes(t *testing.T, p *PKI, cfg *tls.Config) bool {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.CopyN(c, c, 1)
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	st := c.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		t.Fatal("no server certificate")
	}
	return st.DidResume
}

// TestSessionResumptionAcrossRestart: a client resumes its session with a
// master that was reopened from the same directory (a restart, kill -9
// included: nothing is written at shutdown), and the resumed session still
// carries the client's verified certificate. With Go's per-process ticket
// keys the resumption after the restart fails.
func TestSessionResumptionAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	cfg := ClientTLSConfig(p.Roots(), issue(t, p, "agent-1"))
	cfg.ServerName = "localhost"
	if resumes(t, p, cfg) {
		t.Fatal("the first connection resumed")
	}
	p2 := open(t, dir) // the restarted master
	var verified atomic.Bool
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p2.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if tc.Handshake() == nil {
			st := tc.ConnectionState()
			if len(st.VerifiedChains) > 0 {
				if id, err := AgentIDFromCert(st.VerifiedChains[0][0]); err == nil && id == "agent-1" {
					verified.Store(true)
				}
			}
		}
		_, _ = io.CopyN(c, c, 1)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte{1})
	_, _ = io.ReadFull(c, make([]byte, 1))
	did := c.ConnectionState().DidResume
	c.Close()
	if !did {
		t.Fatal("the connection to the restarted master did not resume the TLS session")
	}
	if !verified.Load() {
		t.Error("the resumed session does not carry the verified client certificate of agent-1")
	}
}

// TestTicketKeysFile: 0600, reloaded as is, rotated after a day with the
// old key kept for decryption, expired keys dropped.
func TestTicketKeysFile(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock := func(o *Options) { o.Now = func() time.Time { return now } }
	p := open(t, dir, clock)
	path := filepath.Join(dir, TicketKeysFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", TicketKeysFile, fi.Mode().Perm())
	}
	k1 := p.TicketKeys()
	if len(k1) != 1 || k1[0].Secret == [32]byte{} {
		t.Fatalf("keys = %d, want one random key", len(k1))
	}
	if got := open(t, dir, clock).TicketKeys(); len(got) != 1 || got[0] != k1[0] {
		t.Fatal("reopening within a day changed the key")
	}

	// A client holds a ticket under the first key; a day later the
	// master rotates but still accepts it.
	cfg := ClientTLSConfig(p.Roots(), issue(t, p, "agent-1"))
	cfg.ServerName = "localhost"
	resumes(t, p, cfg)
	now = now.Add(TicketKeyRotation + time.Minute)
	p2 := open(t, dir, clock)
	k2 := p2.TicketKeys()
	if len(k2) != 2 || k2[1] != k1[0] || k2[0].Secret == k1[0].Secret {
		t.Fatalf("after a day: %d keys, want a new one first and the old one second", len(k2))
	}
	if !resumes(t, p2, cfg) {
		t.Error("a ticket under the previous key did not resume")
	}
	// While running: issuing a ticket a day later rotates too.
	now = now.Add(TicketKeyRotation + time.Minute)
	resumes(t, p2, cfg)
	if n := len(p2.TicketKeys()); n != 3 {
		t.Errorf("after another day of running: %d keys, want 3", n)
	}
	if b, _ := os.ReadFile(path); strings.Count(string(b), "\n") != 3 {
		t.Errorf("the file holds %q, want the 3 keys", b)
	}
	// Nine days later every old key has expired.
	now = now.Add(9 * 24 * time.Hour)
	if n := len(open(t, dir, clock).TicketKeys()); n != 1 {
		t.Errorf("after nine idle days: %d keys, want only a new one", n)
	}
}

// TestTicketKeysDamagedOrForeign: a damaged file is replaced (only
// resumption is lost); tickets do not survive a change of CA even with the
// same ticket.keys.
func TestTicketKeysDamagedOrForeign(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, TicketKeysFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := open(t, dir)
	if len(p.TicketKeys()) != 1 {
		t.Fatal("a damaged ticket.keys was not replaced")
	}
	cfg := ClientTLSConfig(p.Roots(), issue(t, p, "agent-1"))
	cfg.ServerName = "localhost"
	resumes(t, p, cfg)

	// Another master (another CA) with a copy of this ticket.keys.
	other := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(dir, TicketKeysFile))
	if err := os.WriteFile(filepath.Join(other, TicketKeysFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	q := open(t, other)
	if q.TicketKeys()[0] != p.TicketKeys()[0] {
		t.Fatal("the copied key was not loaded")
	}
	// The client trusts q too and offers its ticket from p (both are
	// "localhost"). Resumed, q would take agent-1's certificate from p's CA
	// unchecked; in a full handshake q refuses it (unknown CA).
	cfg.RootCAs.AddCert(q.CA())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", q.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.CopyN(c, c, 1)
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write([]byte{1})
	_, rerr := io.ReadFull(c, make([]byte, 1))
	if c.ConnectionState().DidResume || rerr == nil {
		t.Errorf("a ticket issued under another CA was accepted (resumed %v, read error %v)", c.ConnectionState().DidResume, rerr)
	}
}

func TestParseTicketKeys(t *testing.T) {
	good := "1700000100 " + strings.Repeat("ab", 32) + "\n1700000000 " + strings.Repeat("01", 32) + "\n"
	keys, err := ParseTicketKeys([]byte(good))
	if err != nil || len(keys) != 2 || keys[0].Made.Unix() != 1700000100 {
		t.Fatalf("ParseTicketKeys(good) = %v, %v", keys, err)
	}
	if !bytes.Equal(formatTicketKeys(keys), []byte(good)) {
		t.Errorf("format(parse(x)) = %q, want %q", formatTicketKeys(keys), good)
	}
	for _, bad := range []string{
		"",
		"\n",
		"1700000000",
		"1700000000 " + strings.Repeat("ab", 31),
		"1700000000 " + strings.Repeat("zz", 32),
		"-1 " + strings.Repeat("ab", 32),
		"+1700000000 " + strings.Repeat("ab", 32),
		"1700000000  " + strings.Repeat("ab", 32),
		"1700000000 " + strings.Repeat("01", 32) + "\n1700000100 " + strings.Repeat("ab", 32), // oldest first
		strings.Repeat("1700000000 "+strings.Repeat("ab", 32)+"\n", maxTicketKeys+1),
	} {
		if _, err := ParseTicketKeys([]byte(bad)); err == nil {
			t.Errorf("ParseTicketKeys(%q) accepted", bad)
		}
	}
}

func FuzzParseTicketKeys(f *testing.F) {
	f.Add([]byte("1700000000 " + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("1700000100 " + strings.Repeat("ab", 32) + "\n1700000000 " + strings.Repeat("01", 32)))
	f.Add([]byte("99999999999999999999 " + strings.Repeat("ab", 32)))
	f.Add([]byte("1 \x00\xff"))
	f.Add([]byte(strings.Repeat("\n", 5000)))
	f.Add([]byte("1700000000 " + strings.Repeat("AB", 32) + "\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseTicketKeys(b)
		if err != nil {
			return
		}
		if len(keys) == 0 || len(keys) > maxTicketKeys {
			t.Fatalf("%d keys accepted", len(keys))
		}
		again, err := ParseTicketKeys(formatTicketKeys(keys))
		if err != nil || len(again) != len(keys) {
			t.Fatalf("round trip: %v", err)
		}
		for i := range keys {
			if again[i] != keys[i] {
				t.Fatalf("round trip changed key %d", i)
			}
		}
	})
}
