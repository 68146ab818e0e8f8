package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sutragrid/sutra/internal/testutil"
	"github.com/sutragrid/sutra/master/store"
)

// sharedStore is a real bbolt store the test's masters share.
func sharedStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// sharedOpts are a master's options on st, its files in dir.
func sharedOpts(t *testing.T, dir, host string, st store.Store) Options {
	return Options{Dir: dir, Hostname: host, Shared: st, Logger: testutil.Logger(t, slog.LevelDebug),
		Addrs: func() ([]net.IP, error) { return []net.IP{net.ParseIP("10.1.2.3")}, nil }}
}

func openShared(t *testing.T, dir, host string, st store.Store, mod ...func(*Options)) *PKI {
	t.Helper()
	o := sharedOpts(t, dir, host, st)
	for _, m := range mod {
		m(&o)
	}
	p, err := OpenContext(context.Background(), o)
	if err != nil {
		t.Fatalf("OpenContext(%s): %v", host, err)
	}
	return p
}

// TestSharedCAOneCAForAll: masters opening at once on one store end up
// with one CA: the same fingerprint, mirrored into each Dir (ca.key 0600);
// a client certificate one master issued is accepted by another in a real
// mutual TLS handshake, and each master's own server certificate verifies
// against the other's CA bundle.
func TestSharedCAOneCAForAll(t *testing.T) {
	st := sharedStore(t)
	root := t.TempDir()
	const n = 4
	ps := make([]*PKI, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			o := sharedOpts(t, filepath.Join(root, "m"+string(rune('a'+i)), "tls"), "master-"+string(rune('a'+i)), st)
			ps[i], errs[i] = OpenContext(context.Background(), o)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("master %d: OpenContext: %v", i, err)
		}
	}
	a, b := ps[0], ps[1]
	for i, p := range ps {
		if p.Fingerprint() != a.Fingerprint() {
			t.Fatalf("master %d CA fingerprint %s, master 0 %s: want one CA", i, p.Fingerprint(), a.Fingerprint())
		}
		crt, err := os.ReadFile(filepath.Join(p.opts.Dir, CACertFile))
		if err != nil || !bytes.Equal(crt, a.CAPEM()) {
			t.Fatalf("master %d: %s does not mirror the shared CA (%v)", i, CACertFile, err)
		}
		key, err := readKey(filepath.Join(p.opts.Dir, CAKeyFile))
		if err != nil || !samePublicKey(p.CA().PublicKey, key.Public()) {
			t.Fatalf("master %d: %s is not the shared CA's key (%v)", i, CAKeyFile, err)
		}
		if runtime.GOOS != "windows" {
			if fi, _ := os.Stat(filepath.Join(p.opts.Dir, CAKeyFile)); fi.Mode().Perm() != 0o600 {
				t.Fatalf("master %d: %s mode %v, want 0600", i, CAKeyFile, fi.Mode().Perm())
			}
		}
	}
	// The store holds exactly that CA.
	raw, _, err := st.Get(context.Background(), store.TableMeta, []byte(SharedCAKey))
	if err != nil {
		t.Fatal(err)
	}
	stored, _, err := DecodeCARecord(raw)
	if err != nil || Fingerprint(stored) != a.Fingerprint() {
		t.Fatalf("stored CA: %v, fingerprint mismatch or error", err)
	}

	// A's client certificate on B's server; B's server verified with A's bundle.
	clientA := issue(t, a, "agent-1")
	if _, err := clientA.Leaf.Verify(x509.VerifyOptions{Roots: b.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("a client certificate from master A does not verify against B's roots: %v", err)
	}
	if _, err := b.ServerCertificate().Leaf.Verify(x509.VerifyOptions{Roots: a.Roots(), DNSName: "master-b"}); err != nil {
		t.Fatalf("B's server certificate does not verify with A's CA: %v", err)
	}
	if b.ServerCertificate().Leaf.Subject.CommonName != "master-b" {
		t.Fatalf("B's server certificate is for %q, want its own name master-b", b.ServerCertificate().Leaf.Subject.CommonName)
	}
	cfg := ClientTLSConfig(a.Roots(), clientA)
	cfg.ServerName = "master-b"
	st2, serr, cerr := handshake(t, b.ServerTLSConfig(), tlsDial(cfg))
	if serr != nil || cerr != nil {
		t.Fatalf("agent of A on master B: server %v, client %v", serr, cerr)
	}
	if len(st2.VerifiedChains) == 0 {
		t.Fatal("master B did not verify the agent's certificate")
	}
	if id, err := AgentIDFromCert(st2.PeerCertificates[0]); err != nil || id != "agent-1" {
		t.Fatalf("master B sees agent %q, %v; want agent-1", id, err)
	}

	// A restart of B loads the same CA from the store and its mirror.
	if again := openShared(t, b.opts.Dir, "master-b", st); again.Fingerprint() != a.Fingerprint() {
		t.Fatalf("B reopened with CA %s, want %s", again.Fingerprint(), a.Fingerprint())
	}
}

// TestSharedCAConflictingLocalCA: a master whose Dir holds its own CA (it
// ran alone) refuses to join a store holding another CA, naming both
// fingerprints and what to do, and leaves its files alone.
func TestSharedCAConflictingLocalCA(t *testing.T) {
	st := sharedStore(t)
	grid := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-a", st)
	dir := filepath.Join(t.TempDir(), "tls")
	alone := open(t, dir)
	before, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenContext(context.Background(), sharedOpts(t, dir, "master-b", st))
	if err == nil {
		t.Fatal("a master with another local CA joined the store's")
	}
	for _, want := range []string{alone.Fingerprint(), grid.Fingerprint(), "move " + dir + " away"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not contain %q", err, want)
		}
	}
	after, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if !bytes.Equal(before, after) {
		t.Fatal("the refused master's ca.crt was changed")
	}
}

// TestSharedCAUploadsLocal: the first master on an empty store, whose Dir
// already holds a CA, makes that CA the grid's (its agents keep trusting
// it), and its session ticket keys too (they keep resuming).
func TestSharedCAUploadsLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	alone := open(t, dir)
	keys := alone.TicketKeys()
	st := sharedStore(t)
	a := openShared(t, dir, "master-1", st)
	if a.Fingerprint() != alone.Fingerprint() {
		t.Fatalf("after joining: CA %s, want the local %s", a.Fingerprint(), alone.Fingerprint())
	}
	b := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-2", st)
	if b.Fingerprint() != alone.Fingerprint() {
		t.Fatalf("second master: CA %s, want the uploaded %s", b.Fingerprint(), alone.Fingerprint())
	}
	if got := b.TicketKeys(); len(got) != len(keys) || got[0].Secret != keys[0].Secret {
		t.Fatal("the second master does not have the first master's session ticket keys")
	}
	// A client certificate the lone master issued still works on the new one.
	cfg := ClientTLSConfig(b.Roots(), issue(t, alone, "agent-old"))
	cfg.ServerName = "localhost"
	if _, serr, cerr := handshake(t, b.ServerTLSConfig(), tlsDial(cfg)); serr != nil || cerr != nil {
		t.Fatalf("an agent of the lone master on master 2: server %v, client %v", serr, cerr)
	}
}

// TestSharedCADamaged: a damaged CA record in the store stops the master
// with what to do; a damaged local mirror of the store's CA is replaced.
func TestSharedCADamaged(t *testing.T) {
	ctx := context.Background()
	st := sharedStore(t)
	a := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-a", st)

	dir := filepath.Join(t.TempDir(), "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b := openShared(t, dir, "master-b", st); b.Fingerprint() != a.Fingerprint() {
		t.Fatal("a master with a damaged local CA copy did not take the shared CA")
	}

	if err := st.Apply(ctx, []store.Op{store.Put(store.TableMeta, []byte(SharedCAKey), []byte(`{"cert_pem":1}`))}); err != nil {
		t.Fatal(err)
	}
	_, err := OpenContext(ctx, sharedOpts(t, filepath.Join(t.TempDir(), "tls"), "master-c", st))
	if err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "restore the store") {
		t.Fatalf("OpenContext on a damaged stored CA = %v, want an error saying it is damaged and what to do", err)
	}
}

// TestSharedTicketKeysResumeAcrossMasters: an agent that made a full
// handshake with master A resumes its TLS session on master B (two PKIs on
// one store, real TLS over loopback); after A rotates the keys, B adopts
// them at its next sync, and only then resumes A's new tickets.
func TestSharedTicketKeysResumeAcrossMasters(t *testing.T) {
	ctx := context.Background()
	st := sharedStore(t)
	clock := testutil.NewClock(time.Now())
	withClock := func(o *Options) { o.Now = clock.Now }
	a := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-a", st, withClock)
	b := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-b", st, withClock)

	client := func() *tls.Config {
		cfg := ClientTLSConfig(a.Roots(), issue(t, a, "agent-1"))
		cfg.ServerName = "localhost"
		return cfg
	}
	cfg := client()
	if resumes(t, a, cfg) {
		t.Fatal("the first connection (to A) resumed")
	}
	if !resumes(t, b, cfg) {
		t.Fatal("the agent did not resume on master B its session from master A")
	}

	// A day later A rotates; B has not synced yet: A's new tickets do not
	// resume on B (this is what the sync is for). (The certificates are
	// issued before the clock jumps: the TLS stacks check them against the
	// real time.)
	stale, fresh := client(), client()
	clock.Advance(TicketKeyRotation + time.Minute)
	if err := a.tickets.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if ka, kb := a.TicketKeys(), b.TicketKeys(); len(ka) != 2 || ka[0].Secret == kb[0].Secret {
		t.Fatalf("after A's rotation: A has %d keys; want 2 and a newest B does not have yet", len(ka))
	}
	if resumes(t, a, stale) || resumes(t, b, stale) {
		t.Fatal("a ticket under A's new key resumed on B before B synced")
	}
	if err := b.tickets.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if resumes(t, a, fresh) {
		t.Fatal("the first connection resumed")
	}
	if !resumes(t, b, fresh) {
		t.Fatal("after B synced: a ticket under A's new key does not resume on B")
	}
	// Both mirror the store's set in ticket.keys (0600); B rotated nothing.
	fa, _ := os.ReadFile(filepath.Join(a.opts.Dir, TicketKeysFile))
	fb, _ := os.ReadFile(filepath.Join(b.opts.Dir, TicketKeysFile))
	stored, _, _ := st.Get(ctx, store.TableMeta, []byte(SharedTicketKeysKey))
	if !bytes.Equal(fa, stored) || !bytes.Equal(fb, stored) {
		t.Fatalf("ticket.keys files do not mirror the store:\nA %q\nB %q\nstore %q", fa, fb, stored)
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(filepath.Join(b.opts.Dir, TicketKeysFile)); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v, want 0600", TicketKeysFile, fi.Mode().Perm())
		}
	}
}

// TestSharedTicketKeysRotateOnce: two masters due for rotation at the same
// time make one new key between them, not one each.
func TestSharedTicketKeysRotateOnce(t *testing.T) {
	ctx := context.Background()
	st := sharedStore(t)
	clock := testutil.NewClock(time.Now())
	withClock := func(o *Options) { o.Now = clock.Now }
	a := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-a", st, withClock)
	b := openShared(t, filepath.Join(t.TempDir(), "tls"), "master-b", st, withClock)
	clock.Advance(TicketKeyRotation)
	var wg sync.WaitGroup
	for _, p := range []*PKI{a, b} {
		wg.Go(func() {
			if err := p.tickets.sync(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ka, kb := a.TicketKeys(), b.TicketKeys()
	if len(ka) != 2 || len(kb) != 2 || ka[0].Secret != kb[0].Secret {
		t.Fatalf("after a simultaneous rotation: A %d keys, B %d keys, same newest %v; want 2, 2, true", len(ka), len(kb), ka[0].Secret == kb[0].Secret)
	}
}

// TestRunStopsWithContext: Run returns at once without a shared store,
// and when its context ends with one.
func TestRunStopsWithContext(t *testing.T) {
	open(t, t.TempDir()).Run(context.Background()) // returns: no store
	p := openShared(t, t.TempDir(), "m", sharedStore(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// FuzzDecodeCARecord: damaged store values are errors, never a panic, and
// an accepted record is a CA with its own key.
func FuzzDecodeCARecord(f *testing.F) {
	p, err := Open(Options{Dir: f.TempDir(), Hostname: "m", Addrs: func() ([]net.IP, error) { return nil, nil }})
	if err != nil {
		f.Fatal(err)
	}
	other, err := Open(Options{Dir: f.TempDir(), Hostname: "o", Addrs: func() ([]net.IP, error) { return nil, nil }})
	if err != nil {
		f.Fatal(err)
	}
	good, err := encodeCARecord(p.ca, p.key, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	var rec caRecord
	_ = json.Unmarshal(good, &rec)
	mixed, _ := json.Marshal(caRecord{CertPEM: rec.CertPEM, KeyPEM: string(mustKeyPEM(f, other))})
	twoCerts, _ := json.Marshal(caRecord{CertPEM: rec.CertPEM + string(other.CAPEM()), KeyPEM: rec.KeyPEM})
	server, _ := json.Marshal(caRecord{CertPEM: string(pemCert(p.ServerCertificate().Certificate[0])), KeyPEM: rec.KeyPEM})
	for _, seed := range [][]byte{good, mixed, twoCerts, server, good[:len(good)/2], nil, []byte("null"), []byte("[]"), []byte(`""`),
		[]byte(`{"cert_pem":1,"key_pem":2}`), []byte(`{"cert_pem":"","key_pem":""}`), []byte(`{"created":"yesterday"}`),
		bytes.Repeat([]byte("{"), 100000), []byte(`{"cert_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ca, key, err := DecodeCARecord(b)
		if err != nil {
			if ca != nil || key != nil {
				t.Fatal("an error with a result")
			}
			return
		}
		if !ca.IsCA || !samePublicKey(ca.PublicKey, key.Public()) {
			t.Fatal("accepted a record that is not a CA with its key")
		}
	})
}

func mustKeyPEM(f *testing.F, p *PKI) []byte {
	b, err := os.ReadFile(filepath.Join(p.opts.Dir, CAKeyFile))
	if err != nil {
		f.Fatal(err)
	}
	return b
}
