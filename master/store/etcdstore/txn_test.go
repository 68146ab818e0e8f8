package etcdstore

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sutragrid/sutra/master/store"
)

// FuzzPlan: a batch of arbitrary ops is either refused with ErrInvalidOp
// or ErrUnknownTable, or planned as one op per distinct key, the last op
// on it, within the limits.
func FuzzPlan(f *testing.F) {
	f.Add([]byte("\x00k\x01v\x00k\x02"), uint8(3), int64(0))
	f.Add([]byte(""), uint8(1), int64(-1))
	f.Add(bytes.Repeat([]byte("\x01a\x01b"), 200), uint8(128), int64(5))
	f.Add([]byte("\x09\xff\x00\x00"), uint8(0), int64(1<<62))
	f.Fuzz(func(t *testing.T, data []byte, maxOps uint8, rev int64) {
		// data: groups of (table index, key length, key, value-or-delete).
		var ops []store.Op
		for len(data) >= 2 {
			tbl := "no-such-table"
			if int(data[0]) < len(store.Tables) {
				tbl = store.Tables[data[0]]
			}
			n := min(int(data[1]), len(data)-2)
			key := data[2 : 2+n]
			data = data[2+n:]
			var val []byte
			if len(data) > 0 && data[0]%2 == 0 {
				val = bytes.Repeat([]byte{data[0]}, int(data[0])*4096)
			}
			if len(data) > 0 {
				data = data[1:]
			}
			ops = append(ops, store.Op{Table: tbl, Key: key, Value: val})
		}
		var conds []store.Cond
		if len(ops) > 0 {
			conds = append(conds, store.Cond{Table: ops[0].Table, Key: ops[0].Key, Rev: store.Revision(rev)})
		}
		p, err := makePlan(DefaultPrefix, conds, ops, int(maxOps)+1)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidOp) && !errors.Is(err, store.ErrUnknownTable) {
				t.Fatalf("makePlan = %v, want ErrInvalidOp or ErrUnknownTable", err)
			}
			return
		}
		if len(p.keys) > int(maxOps)+1 || p.bytes > MaxTxnBytes || len(p.keys) != len(p.ops) {
			t.Fatalf("plan of %d keys, %d bytes over the limits", len(p.keys), p.bytes)
		}
		seen := map[string]bool{}
		for i, k := range p.keys {
			if seen[k] {
				t.Fatalf("key %q twice in one Txn", k)
			}
			seen[k] = true
			var last store.Op
			for _, op := range ops {
				if Key(DefaultPrefix, op.Table, op.Key) == k {
					last = op
				}
			}
			if !bytes.Equal(last.Value, p.ops[i].Value) || (last.Value == nil) != (p.ops[i].Value == nil) {
				t.Fatalf("key %q planned with another op than the batch's last", k)
			}
		}
		for _, op := range ops {
			if !seen[Key(DefaultPrefix, op.Table, op.Key)] {
				t.Fatalf("op on %s/%q dropped", op.Table, op.Key)
			}
		}
	})
}
