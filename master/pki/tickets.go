package pki

// TLS session ticket keys that survive a restart.
//
// Go's TLS server encrypts session tickets with keys it makes at random
// per process, so after a master restart (or kill -9) every agent's ticket
// is worthless and 10,000 agents reconnecting all pay a full handshake
// (certificate signatures both ways) at once. The master keeps its ticket
// keys in {Dir}/ticket.keys instead (0600, written like the other keys):
// one line per key, "<unix seconds made> <64 hex digits>", newest first.
// The newest encrypts new tickets; every kept key decrypts. A new key is
// made when the newest is older than TicketKeyRotation (checked at Open and
// whenever a ticket is issued), and keys older than the longest ticket
// lifetime (7 days in TLS 1.3) plus one rotation are dropped, so a stolen
// file opens at most a week of past tickets.
//
// The key that encrypts is not the stored secret itself but
// HMAC-SHA256(secret, "sutra ticket key" || CA fingerprint): replacing the
// CA (or restoring another master's ticket.keys) invalidates every ticket,
// so no session resumed from a ticket can carry a client certificate the
// current CA did not verify.
//
// Several masters (Options.Shared): the key set lives in the shared store
// (table meta, key "pki/ticket-keys", the same format), so an agent that
// fails over to another master resumes its session there. Rotation writes
// the store with a compare-and-swap on the revision read (the loser adopts
// the winner's set), each master adopts the store's set at Open and every
// TicketSyncInterval (PKI.Run), and ticket.keys mirrors it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/master/store"
)

// TicketKeysFile holds the session ticket keys in Options.Dir.
const TicketKeysFile = "ticket.keys"

// Ticket key policy.
const (
	// TicketKeyRotation is the age at which a new ticket key is made.
	TicketKeyRotation = 24 * time.Hour
	// ticketKeyMaxAge: keys older than this decrypt nothing any more (TLS
	// 1.3 tickets live at most 7 days, and a key encrypted tickets for up
	// to one rotation period).
	ticketKeyMaxAge = 7*24*time.Hour + TicketKeyRotation
	// maxTicketKeys bounds what a file may hold (a few more than a week
	// of daily keys, in case of clock steps).
	maxTicketKeys = 16
	// maxTicketKeysFile bounds the file read.
	maxTicketKeysFile = 4 << 10
)

// TicketKey is one stored session ticket secret.
type TicketKey struct {
	Made   time.Time
	Secret [32]byte
}

// ParseTicketKeys parses the ticket.keys format (see the file comment):
// at most 16 lines "<unix seconds> <64 hex digits>", newest first, no
// blank or other lines.
func ParseTicketKeys(b []byte) ([]TicketKey, error) {
	if len(b) > maxTicketKeysFile {
		return nil, fmt.Errorf("ticket keys: %d bytes: at most %d", len(b), maxTicketKeysFile)
	}
	var keys []TicketKey
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		if len(keys) == maxTicketKeys {
			return nil, fmt.Errorf("ticket keys: more than %d keys", maxTicketKeys)
		}
		made, secret, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("ticket keys: line %d: want \"<unix seconds> <64 hex digits>\"", n)
		}
		sec, err := strconv.ParseInt(made, 10, 64)
		if err != nil || sec <= 0 || sec > 1<<40 || strconv.FormatInt(sec, 10) != made {
			return nil, fmt.Errorf("ticket keys: line %d: bad time %q", n, made)
		}
		var k TicketKey
		if len(secret) != 64 {
			return nil, fmt.Errorf("ticket keys: line %d: want 64 hex digits, have %d characters", n, len(secret))
		}
		if _, err := hex.Decode(k.Secret[:], []byte(secret)); err != nil {
			return nil, fmt.Errorf("ticket keys: line %d: %w", n, err)
		}
		k.Made = time.Unix(sec, 0)
		if len(keys) > 0 && k.Made.After(keys[len(keys)-1].Made) {
			return nil, fmt.Errorf("ticket keys: line %d: not newest first", n)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ticket keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("ticket keys: no key")
	}
	return keys, nil
}

// formatTicketKeys is ParseTicketKeys' inverse.
func formatTicketKeys(keys []TicketKey) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%d %s\n", k.Made.Unix(), hex.EncodeToString(k.Secret[:]))
	}
	return b.Bytes()
}

// tickets encrypts and decrypts session tickets with the stored keys.
type tickets struct {
	path string
	// bind is mixed into every key (the CA fingerprint).
	bind string
	now  func() time.Time
	log  *slog.Logger
	// shared, when not nil, holds the keys of every master (sync).
	shared store.Store

	mu   sync.Mutex
	keys []TicketKey // newest first
	// rev is the store revision keys were read or written at (shared).
	rev store.Revision
	cfg *tls.Config // holds the derived keys for EncryptTicket/DecryptTicket
}

// openTickets loads path, or starts anew when it is missing or damaged
// (only resumption is lost), and rotates. With shared, the store's keys
// win over the file's (sync).
func openTickets(ctx context.Context, path, bind string, now func() time.Time, log *slog.Logger, shared store.Store) (*tickets, error) {
	t := &tickets{path: path, bind: bind, now: now, log: log, shared: shared}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("pki: %w", err)
	default:
		keys, perr := ParseTicketKeys(b)
		if perr != nil {
			log.Warn("session ticket keys do not load: making new ones (agents reconnect with full handshakes once)", "file", path, "err", perr)
		}
		t.keys = keys
	}
	if shared != nil {
		if err := t.sync(ctx); err != nil {
			return nil, err
		}
		return t, nil
	}
	if err := t.rotate(true); err != nil {
		return nil, err
	}
	return t, nil
}

// nextTicketKeys is keys rotated at now: a new key first when the newest
// is too old (or in the future, or there is none), expired keys dropped.
// changed reports a difference from keys, which it does not modify.
func nextTicketKeys(keys []TicketKey, now time.Time) (next []TicketKey, changed bool, err error) {
	next = slices.Clone(keys)
	if len(next) == 0 || now.Sub(next[0].Made) >= TicketKeyRotation || next[0].Made.After(now.Add(time.Hour)) {
		k := TicketKey{Made: now.Truncate(time.Second)}
		if _, err := rand.Read(k.Secret[:]); err != nil {
			return nil, false, fmt.Errorf("pki: ticket key: %w", err)
		}
		next = append([]TicketKey{k}, next...)
		changed = true
	}
	kept := next[:1]
	for _, k := range next[1:] {
		if now.Sub(k.Made) < ticketKeyMaxAge && len(kept) < maxTicketKeys {
			kept = append(kept, k)
		}
	}
	return kept, changed || len(kept) != len(next), nil
}

// use makes keys the ones tickets are encrypted and decrypted with. The
// caller holds t.mu or has t to itself.
func (t *tickets) use(keys []TicketKey) {
	derived := make([][32]byte, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k.Secret[:])
		m.Write([]byte("sutra ticket key\x00" + t.bind))
		copy(derived[i][:], m.Sum(nil))
	}
	cfg := &tls.Config{}
	cfg.SetSessionTicketKeys(derived)
	t.keys, t.cfg = keys, cfg
}

// rotate makes a new key when the newest is too old (or there is none),
// drops expired keys, and writes the file when anything changed (or force).
// The caller holds t.mu or has t to itself.
func (t *tickets) rotate(force bool) error {
	keys, changed, err := nextTicketKeys(t.keys, t.now())
	if err != nil {
		return err
	}
	t.use(keys)
	if changed || force {
		if err := atomicfile.Write(t.path, formatTicketKeys(t.keys), 0o600); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
	}
	return nil
}

// sync brings the keys in step with the shared store: it adopts the
// store's keys when they changed, and when a rotation is due (or the store
// has none, or holds damaged ones) it writes the rotated set with a
// compare-and-swap on the revision it read; the loser of a race between
// masters reads the winner's set. With no keys in the store yet, the file's
// (a master that ran alone) are kept, so its agents still resume. The file
// mirrors what the store holds.
func (t *tickets) sync(ctx context.Context) error {
	key := []byte(SharedTicketKeysKey)
	for range 5 {
		b, rev, err := t.shared.Get(ctx, store.TableMeta, key)
		if err != nil {
			return fmt.Errorf("pki: read the shared session ticket keys: %w", err)
		}
		t.mu.Lock()
		base := t.keys
		t.mu.Unlock()
		damaged := false
		if b != nil {
			keys, perr := ParseTicketKeys(b)
			if perr != nil {
				t.log.Warn("the shared session ticket keys do not load: replacing them (agents reconnect with full handshakes once)",
					"key", store.TableMeta+"/"+SharedTicketKeysKey, "err", perr)
				damaged = true
			} else {
				base = keys
			}
		}
		next, changed, err := nextTicketKeys(base, t.now())
		if err != nil {
			return err
		}
		if b != nil && !damaged && !changed {
			return t.adopt(base, rev, false)
		}
		newRev, err := t.shared.ApplyIf(ctx, []store.Cond{store.IfRevision(store.TableMeta, key, rev)},
			[]store.Op{store.Put(store.TableMeta, key, formatTicketKeys(next))})
		if errors.Is(err, store.ErrConflict) {
			continue // another master rotated first: read its keys
		}
		if err != nil {
			return fmt.Errorf("pki: store the shared session ticket keys: %w", err)
		}
		return t.adopt(next, newRev, true)
	}
	return errors.New("pki: the shared session ticket keys kept changing under this master (5 conflicts in a row): retrying later")
}

// adopt uses keys read or written at rev and mirrors them into the file
// when they differ from the last ones.
func (t *tickets) adopt(keys []TicketKey, rev store.Revision, rotated bool) error {
	t.mu.Lock()
	same := rev == t.rev && t.cfg != nil
	if !same {
		t.use(keys)
		t.rev = rev
	}
	t.mu.Unlock()
	if same {
		return nil
	}
	if rotated {
		t.log.Info("shared session ticket keys rotated", "keys", len(keys), "newest", keys[0].Made.UTC())
	}
	if err := atomicfile.Write(t.path, formatTicketKeys(keys), 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// config returns the key holder, rotating first when due (with a shared
// store, PKI.Run rotates instead: a handshake never waits on the store). A
// failed write is logged: the new key serves this process, the next start
// makes another.
func (t *tickets) config() *tls.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shared == nil && t.now().Sub(t.keys[0].Made) >= TicketKeyRotation {
		if err := t.rotate(false); err != nil {
			t.log.Warn("session ticket key rotation: could not write the keys", "file", t.path, "err", err)
		}
	}
	return t.cfg
}

func (t *tickets) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	return t.config().EncryptTicket(cs, ss)
}

func (t *tickets) unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	return t.config().DecryptTicket(identity, cs)
}

// TicketSyncInterval is how often Run brings a master's session ticket
// keys in step with the shared store: a ticket another master issued under
// a key made less than this ago may not resume here yet (a full handshake
// instead).
const TicketSyncInterval = time.Minute

// Run keeps the session ticket keys in step with the shared store until ctx
// ends: every TicketSyncInterval it adopts the keys another master rotated,
// and rotates them itself when due, so that every master decrypts every
// master's tickets. A failed round is logged and retried at the next tick.
// Without Options.Shared it returns at once (the keys rotate on use).
func (p *PKI) Run(ctx context.Context) {
	if p.tickets.shared == nil {
		return
	}
	tick := time.NewTicker(TicketSyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := p.tickets.sync(ctx); err != nil && ctx.Err() == nil {
				p.log.Warn("session ticket keys not in step with the store", "err", err)
			}
		}
	}
}

// TicketKeys returns the stored session ticket keys, newest first (tests,
// diagnostics).
func (p *PKI) TicketKeys() []TicketKey {
	p.tickets.mu.Lock()
	defer p.tickets.mu.Unlock()
	return append([]TicketKey(nil), p.tickets.keys...)
}
