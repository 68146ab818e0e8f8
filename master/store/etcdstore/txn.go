package etcdstore

import (
	"fmt"

	"github.com/sutragrid/sutra/master/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// txnOverhead is what one op or compare adds to a Txn request beyond its
// key and value (protobuf framing, revisions), generously.
const txnOverhead = 64

// plan is a validated batch: the etcd keys of its conditions, and one op
// per distinct key (the batch's last op on it), in order of first use.
type plan struct {
	conds []store.Cond
	ckeys []string
	keys  []string
	ops   []store.Op // ops[i] writes keys[i]
	bytes int
}

// makePlan validates conds and ops (nothing reaches etcd when one is
// wrong) and collapses the ops on one key to the last, as etcd refuses a
// key twice in one Txn.
func makePlan(prefix string, conds []store.Cond, ops []store.Op, maxOps int) (*plan, error) {
	p := &plan{conds: conds}
	if len(conds) > maxOps {
		return nil, fmt.Errorf("%w: %d conditions in one batch, etcd takes at most %d in a transaction (etcd --max-txn-ops)", store.ErrInvalidOp, len(conds), maxOps)
	}
	for _, c := range conds {
		if err := store.ValidateOp(store.Op{Table: c.Table, Key: c.Key}); err != nil {
			return nil, fmt.Errorf("condition: %w", err)
		}
		if c.Rev < 0 {
			return nil, fmt.Errorf("%w: condition on %s/%q at negative revision %d", store.ErrInvalidOp, c.Table, c.Key, c.Rev)
		}
		k := Key(prefix, c.Table, c.Key)
		p.ckeys = append(p.ckeys, k)
		p.bytes += 2*len(k) + 2*txnOverhead // the compare and the Get of the Else branch
	}
	index := make(map[string]int, len(ops))
	for _, op := range ops {
		if err := store.ValidateOp(op); err != nil {
			return nil, err
		}
		k := Key(prefix, op.Table, op.Key)
		if i, ok := index[k]; ok {
			p.ops[i] = op
			continue
		}
		index[k] = len(p.keys)
		p.keys = append(p.keys, k)
		p.ops = append(p.ops, op)
	}
	if len(p.keys) > maxOps {
		return nil, fmt.Errorf("%w: a batch of %d distinct keys, etcd takes at most %d in a transaction (raise etcd --max-txn-ops and the master's limit together, or write smaller batches)", store.ErrInvalidOp, len(p.keys), maxOps)
	}
	for i, op := range p.ops {
		p.bytes += len(p.keys[i]) + len(op.Value) + txnOverhead
	}
	if p.bytes > MaxTxnBytes {
		return nil, fmt.Errorf("%w: a batch of about %d bytes, etcd takes at most %d in one request (etcd --max-request-bytes)", store.ErrInvalidOp, p.bytes, MaxTxnBytes)
	}
	return p, nil
}

// txn builds the etcd transaction of the plan: If every mod revision is
// as the conditions say, Then the writes, Else read the condition keys
// (to name the one that failed).
func (p *plan) txn(t clientv3.Txn) clientv3.Txn {
	cmps := make([]clientv3.Cmp, len(p.ckeys))
	gets := make([]clientv3.Op, len(p.ckeys))
	for i, k := range p.ckeys {
		cmps[i] = clientv3.Compare(clientv3.ModRevision(k), "=", int64(p.conds[i].Rev))
		gets[i] = clientv3.OpGet(k, clientv3.WithKeysOnly())
	}
	then := make([]clientv3.Op, len(p.ops))
	for i, op := range p.ops {
		if op.Value == nil {
			then[i] = clientv3.OpDelete(p.keys[i])
		} else {
			then[i] = clientv3.OpPut(p.keys[i], string(op.Value))
		}
	}
	if len(cmps) > 0 {
		t = t.If(cmps...)
	}
	t = t.Then(then...)
	if len(gets) > 0 {
		t = t.Else(gets...)
	}
	return t
}

// conflict names the first condition that did not hold, from the Else
// branch's reads.
func (p *plan) conflict(resp *clientv3.TxnResponse) error {
	for i, r := range resp.Responses {
		if i >= len(p.conds) {
			break
		}
		rr := r.GetResponseRange()
		if rr == nil {
			continue
		}
		var rev store.Revision
		if len(rr.Kvs) > 0 {
			rev = store.Revision(rr.Kvs[0].ModRevision)
		}
		if rev != p.conds[i].Rev {
			return &store.ConflictError{Cond: p.conds[i], Rev: rev}
		}
	}
	return store.ErrConflict
}
