// Package store is the master's durable state: a small key/value interface
// and its embedded implementation on bbolt (one file, grid.db, in
// SUTRA_DATA_DIR).
//
// The interface is the seam for several masters: a later backend (etcd)
// implements it without knowing the fleet's record types, which the fleet
// package encodes itself. It is shaped after etcd's: a store-wide Revision
// that grows with every commit; each key carries the revision of its last
// change (etcd's mod revision; 0 = absent); ApplyIf commits a batch only
// if every key named in a Cond is still at the revision the caller read
// (etcd's Txn(If(ModRevision(k) = r)...).Then(ops)), else ErrConflict; and
// Watch streams the changes of a table in revision order from a given
// revision (etcd's Watch(WithPrefix, WithRev)), failing with ErrCompacted
// for revisions the backend no longer keeps. Nothing of the backend (bbolt
// transactions, buckets, errors) shows above this interface; the contract
// every backend keeps is written as a test suite in master/store/storetest,
// which the bbolt backend runs.
//
// For an etcd backend: a table is a key prefix; a batch becomes one Txn,
// with the ops on one key collapsed to the last (etcd refuses a key twice in
// one Txn, and last-write-wins is the batch's meaning); etcd caps a Txn at
// --max-txn-ops (128 by default) and 1.5 MiB, which the fleet's group
// commit can exceed, so that backend needs the limits raised or the
// committer's batches bounded.
//
// Durability: Apply returns only after the batch is committed; bbolt fsyncs
// the data file on every commit, so a batch that Apply acknowledged survives
// kill -9 and power loss. A batch is all-or-nothing.
package store

import (
	"context"
	"errors"
	"fmt"
)

// Tables the fleet uses. A backend accepts exactly these names (another
// table is ErrUnknownTable) and creates them up front.
const (
	TableAgents = "agents"
	TableNodes  = "nodes"
	TableEvents = "events"
	TableMeta   = "meta"
	// TableTokens holds the join tokens (master/tokens): hashes, never secrets.
	TableTokens = "tokens"
	// TableRevoked is the agent certificate denylist (master/auth): agent
	// ids revoked by an operator, checked on every call.
	TableRevoked = "revoked"
	// TableRollouts holds fleet rollouts (master/rollout).
	TableRollouts = "rollouts"
	// TableReleases holds release metadata the operator sets: yanked
	// versions.
	TableReleases = "releases"
	// TableMasters holds the masters of the control plane (master/cluster):
	// each master's registration and the leader election's keys. The bbolt
	// backend keeps it empty (one master, always the leader).
	TableMasters = "masters"
	// TableBinaries records which master holds which binary with which
	// checksum (several masters, each with its own BINARIES_DIR).
	TableBinaries = "binaries"
)

// Tables lists every table a backend creates when it opens.
var Tables = []string{TableAgents, TableNodes, TableEvents, TableMeta, TableTokens, TableRevoked, TableRollouts, TableReleases, TableMasters, TableBinaries}

// Op is one write in a batch: Value != nil puts Key=Value, Value == nil deletes Key.
type Op struct {
	Table string
	Key   []byte
	Value []byte
}

// Put returns an Op that stores value under key.
func Put(table string, key, value []byte) Op { return Op{Table: table, Key: key, Value: value} }

// Delete returns an Op that removes key (a missing key is not an error).
func Delete(table string, key []byte) Op { return Op{Table: table, Key: key} }

// Store is the persistence the fleet needs. Its methods are safe for
// concurrent use. Keys are 1..MaxKeySize bytes, values at most MaxValueSize
// (an empty value is a value; a nil Op.Value deletes); anything else is
// ErrInvalidOp and the batch changes nothing. Values a Store returns are the
// caller's; slices passed in may be reused once the call returns.
type Store interface {
	// Apply commits ops atomically, in order (the last op on a key wins),
	// and durably before returning. An empty batch is a no-op.
	Apply(ctx context.Context, ops []Op) error
	// ApplyIf is Apply on condition: it commits ops only if every cond
	// holds at commit time, and returns the revision of the commit (the
	// mod revision of every key the batch wrote). If a cond does not hold
	// nothing is written and the error wraps ErrConflict. With no ops it
	// only checks conds and returns the current revision.
	ApplyIf(ctx context.Context, conds []Cond, ops []Op) (Revision, error)
	// Get returns key's value and mod revision; an absent key is (nil, 0, nil).
	Get(ctx context.Context, table string, key []byte) ([]byte, Revision, error)
	// Scan calls fn for every key/value of table in ascending byte order of
	// the keys, from one consistent snapshot, until fn returns an error,
	// which Scan returns. fn must not retain key or value.
	Scan(ctx context.Context, table string, fn func(key, value []byte) error) error
	// Revision is the revision of the last commit (before any, a backend's
	// starting revision, 0 or more).
	Revision(ctx context.Context) (Revision, error)
	// Watch streams every change to table committed at revision from or
	// later, in revision order, each change once; from 0 means changes
	// after the call. Every change made since the store was opened can be
	// replayed while there are at most MinWatchHistory of them; an older
	// from fails with ErrCompacted. The channel is closed when ctx ends,
	// when the store closes, or when the watcher falls too far behind (a
	// slow reader never blocks a commit): resume with Watch(last.Rev+1).
	//
	// To follow a table: r := Revision, Scan, Watch(r+1); the changes
	// replayed over the scan (which may already include some of them)
	// converge on the table's state, as each change carries a whole value.
	Watch(ctx context.Context, table string, from Revision) (<-chan Change, error)
	// Close releases the store; watch channels close, later calls fail.
	Close() error
}

// Revision is the store's logical clock: the revision of a commit is
// greater than that of every commit before it. A key's revision is that of
// the commit that last wrote it; 0 means the key is absent.
type Revision int64

// Limits every backend accepts (etcd's default request limit is 1.5 MiB).
const (
	MaxKeySize   = 1024
	MaxValueSize = 1 << 20
	// MinWatchHistory is how many recent changes every backend can replay
	// to a Watch at least (see Store.Watch).
	MinWatchHistory = 1000
)

// Cond is a condition of ApplyIf: Key of Table is at revision Rev (0: absent).
type Cond struct {
	Table string
	Key   []byte
	Rev   Revision
}

// IfRevision is the condition that key was last written at rev, that is,
// nobody changed it since the caller read it at rev (rev 0: it is absent).
func IfRevision(table string, key []byte, rev Revision) Cond {
	return Cond{Table: table, Key: key, Rev: rev}
}

// IfAbsent is the condition that key does not exist (create-only).
func IfAbsent(table string, key []byte) Cond { return IfRevision(table, key, 0) }

// Change is one committed change of a key, as Watch delivers it. A batch
// yields one Change per key whose value it changed (the batch's last op on
// the key; deleting an absent key changes nothing), all with the batch's
// revision, in no particular order among themselves. Key and Value may be
// shared by every watcher of the table: read them, don't modify them.
type Change struct {
	Table string
	Key   []byte
	// Value is the new value; nil: the key was deleted.
	Value []byte
	Rev   Revision
}

// Deleted reports whether the change removed the key.
func (c Change) Deleted() bool { return c.Value == nil }

// Health is what a backend says about itself on status pages (sutra
// status, /api/cluster): for etcd, each member's state.
type Health struct {
	// Backend is "bbolt" or "etcd".
	Backend string `json:"backend"`
	// OK: the store answers reads and writes.
	OK bool `json:"ok"`
	// Detail says what is wrong when not OK (an alarm, members down).
	Detail  string         `json:"detail,omitempty"`
	Members []MemberHealth `json:"members,omitempty"`
}

// MemberHealth is one member of a replicated backend.
type MemberHealth struct {
	Endpoint    string `json:"endpoint"`
	OK          bool   `json:"ok"`
	Leader      bool   `json:"leader,omitempty"`
	DBSizeBytes int64  `json:"db_size_bytes,omitempty"`
	Version     string `json:"version,omitempty"`
	Error       string `json:"error,omitempty"`
}

// HealthReporter is implemented by backends that can report their health.
type HealthReporter interface {
	Health(ctx context.Context) Health
}

// Errors every backend returns (wrapped), for conditions callers act on.
var (
	// ErrUnknownTable: a table the store was not opened with.
	ErrUnknownTable = errors.New("unknown table")
	// ErrInvalidOp: an empty or oversized key, an oversized value.
	ErrInvalidOp = errors.New("invalid operation")
	// ErrConflict: an ApplyIf condition did not hold; read again and retry.
	ErrConflict = errors.New("revision conflict")
	// ErrCompacted: Watch from a revision the store no longer keeps; Scan
	// again and watch from the revision before the scan.
	ErrCompacted = errors.New("revision compacted")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
)

// ConflictError names the condition of ApplyIf that did not hold. It wraps
// ErrConflict. (A backend may return a bare ErrConflict when it cannot tell
// which condition failed.)
type ConflictError struct {
	Cond Cond
	// Rev is the key's revision at commit time.
	Rev Revision
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s/%q is at revision %d, not %d: %v", e.Cond.Table, e.Cond.Key, e.Rev, e.Cond.Rev, ErrConflict)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// ValidateOp reports whether op is within the limits every backend accepts.
func ValidateOp(op Op) error {
	if !knownTable(op.Table) {
		return fmt.Errorf("%w %q", ErrUnknownTable, op.Table)
	}
	return validateKey(op.Table, op.Key, op.Value)
}

func validateKey(table string, key, value []byte) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty key in table %s", ErrInvalidOp, table)
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: key of %d bytes in table %s (at most %d)", ErrInvalidOp, len(key), table, MaxKeySize)
	case len(value) > MaxValueSize:
		return fmt.Errorf("%w: value of %d bytes for %s/%q (at most %d)", ErrInvalidOp, len(value), table, key, MaxValueSize)
	}
	return nil
}

func knownTable(table string) bool {
	for _, t := range Tables {
		if t == table {
			return true
		}
	}
	return false
}
