// Package etcdstore is the store.Store of several masters: the fleet's
// tables as key prefixes in etcd (Key), batches as etcd transactions with
// compare-and-swap on mod revisions, Watch as etcd watches. It passes the
// same contract suite (master/store/storetest) as the bbolt backend.
//
// # Layout
//
// Every key of the grid is prefix + table + "/" + key (Key, TablePrefix;
// prefix is --etcd-prefix, DefaultPrefix "/sutra/"). A store revision is
// etcd's revision (of the whole cluster: writes under other prefixes
// advance it too); a key's revision is its etcd mod revision. Nothing else
// is written: Open creates nothing, and several grids can share one etcd
// under different prefixes.
//
// # Batches
//
// Apply and ApplyIf are one etcd Txn: If(ModRevision(key) = rev for each
// condition) Then(the ops, one per key: the batch's last op on it) Else(a
// read of the condition keys, so that a conflict names the condition that
// failed and the key's revision in one round trip, store.ConflictError).
// Every op is validated first (store.ValidateOp): nothing reaches etcd
// when one is wrong. A write that etcd says it never took (no leader, no
// connection) is sent again within the request timeout; one whose fate is
// unknown (a timeout, a leader change while it was in flight) is returned
// as an error, as sending a compare-and-swap twice could fail on its own
// first success.
//
// # Limits
//
//   - At most Options.MaxTxnOps distinct keys per batch, and as many
//     conditions (DefaultMaxTxnOps = 128, etcd's --max-txn-ops default):
//     more is store.ErrInvalidOp before anything is sent. Raise etcd's
//     --max-txn-ops and the master's limit together, or keep batches small
//     (the fleet bounds its group commit by (*Store).MaxTxnOps).
//   - About 1.5 MiB per batch (MaxTxnBytes, etcd's --max-request-bytes
//     default): more is store.ErrInvalidOp. Values are small by design;
//     binaries never go into etcd.
//   - Scan reads pages of 256 keys, all at the revision of the first page:
//     one consistent snapshot that is never one unbounded response.
//   - A watcher may fall 1024 changes behind before its channel closes
//     (it resumes with Watch(last.Rev+1)); a slow reader never holds up
//     etcd or other watchers.
//
// # Watches and compaction
//
// Watch(table, from) is an etcd watch of the table's prefix from revision
// from, created before Watch returns. A from etcd has compacted is
// store.ErrCompacted from Watch itself; a compaction that overtakes a
// running watch, the member losing its leader (watches require one, so a
// partitioned member cannot keep a watch silently stale), or Close close
// the channel instead.
//
// etcd keeps every old revision until it is compacted. Either let etcd do
// it (--auto-compaction-mode=revision --auto-compaction-retention=10000)
// or let the leading master do it: RunCompactor calls CompactOnce, which
// compacts to the current revision minus keep (DefaultCompactKeep 10000,
// never below store.MinWatchHistory). Compaction frees revisions, not
// disk: defragment each member now and then (etcdctl defrag), one member
// at a time.
//
// # etcd server flags an operator sets
//
//   - --quota-backend-bytes (default 2 GiB; 8 GiB at most is advised): when
//     the database reaches it, etcd raises the NOSPACE alarm.
//   - --auto-compaction-mode=revision --auto-compaction-retention=10000,
//     unless the master's compactor runs.
//   - --max-txn-ops: at least the master's limit (128 by default).
//   - client TLS (--cert-file, --key-file, --client-cert-auth,
//     --trusted-ca-file); the master's side is LoadTLS.
//
// # NOSPACE
//
// With the alarm raised etcd refuses every write; every write of the store
// then fails with ErrNoSpace, and Health reports the alarm. To recover:
// compact (etcdctl compact $(etcdctl endpoint status -w json | jq
// '.[0].Status.header.revision')), defragment every member (etcdctl
// defrag --cluster), then etcdctl alarm disarm. Raise the quota or the
// compaction rate so it does not come back.
//
// # Errors
//
// store.ErrClosed after Close; the caller's context errors as they are;
// ErrNoSpace; store.ErrCompacted; anything else names the endpoints and
// wraps etcd's error (unreachable, no leader, a timeout).
package etcdstore
