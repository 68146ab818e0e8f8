package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/sutragrid/sutra/internal/etcdtest"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// FuzzApply drives arbitrary batches and conditions through a real etcd
// and checks the store against a model: a refused batch changes nothing,
// an accepted one leaves the last op of each key, Scan is the model in
// byte order, Get agrees, and a condition holds exactly when the model
// says so.
func FuzzApply(f *testing.F) {
	f.Add([]byte("\x00a\x01\x00a\x00\x01b\x02"))
	f.Add([]byte("\x00\x00\x01\x02\xff\x00\x10\x03"))
	f.Add([]byte("\x05k\x01\xff\x01\x01\xfe\x00\x00k\x00"))
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d"))
	f.Add(bytes.Repeat([]byte("\x01z\x01"), 60))
	c := etcdtest.Start(f)
	tables := []string{store.TableAgents, store.TableNodes, "bogus"}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		s, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: randomPrefix(t), MaxTxnOps: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		model := map[string]map[string]string{store.TableAgents: {}, store.TableNodes: {}}
		revs := map[string]store.Revision{}
		for batch := 0; len(data) >= 3 && batch < 8; batch++ {
			// (flags, key length, key bytes..., [value byte]) until a 0xff flags.
			var ops []store.Op
			var conds []store.Cond
			for len(data) >= 2 && data[0] != 0xff {
				fl, n := data[0], min(int(data[1])%5, len(data)-2)
				key := data[2 : 2+n]
				data = data[2+n:]
				table := tables[int(fl)%len(tables)]
				switch {
				case fl&0x40 != 0: // a condition at the key's model revision, or a wrong one
					rev := revs[table+"/"+string(key)]
					if fl&0x20 != 0 {
						rev += 1
					}
					conds = append(conds, store.Cond{Table: table, Key: key, Rev: rev})
				case fl&0x10 != 0:
					ops = append(ops, store.Delete(table, key))
				default:
					val := []byte{}
					if len(data) > 0 {
						val, data = bytes.Repeat(data[:1], int(data[0])%8), data[1:]
					}
					ops = append(ops, store.Put(table, key, val))
				}
			}
			if len(data) > 0 {
				data = data[1:]
			}
			// What the model expects.
			invalid, holds, distinct := false, true, map[string]bool{}
			for _, op := range ops {
				invalid = invalid || store.ValidateOp(op) != nil
				distinct[op.Table+"/"+string(op.Key)] = true
			}
			for _, c := range conds {
				invalid = invalid || store.ValidateOp(store.Op{Table: c.Table, Key: c.Key}) != nil
				holds = holds && revs[c.Table+"/"+string(c.Key)] == c.Rev
			}
			invalid = invalid || len(distinct) > 16 || len(conds) > 16
			rev, err := s.ApplyIf(ctx, conds, ops)
			switch {
			case invalid:
				if !errors.Is(err, store.ErrInvalidOp) && !errors.Is(err, store.ErrUnknownTable) {
					t.Fatalf("ApplyIf(invalid batch %v if %v) = %v, want ErrInvalidOp or ErrUnknownTable", ops, conds, err)
				}
				continue
			case !holds:
				var ce *store.ConflictError
				if !errors.As(err, &ce) || revs[ce.Cond.Table+"/"+string(ce.Cond.Key)] != ce.Rev || ce.Rev == ce.Cond.Rev {
					t.Fatalf("ApplyIf(failing conditions %v) = %v, want a ConflictError naming a failing one", conds, err)
				}
				continue
			case err != nil:
				t.Fatalf("ApplyIf(%v if %v) = %v", ops, conds, err)
			}
			for _, op := range ops {
				k := op.Table + "/" + string(op.Key)
				if op.Value == nil {
					delete(model[op.Table], string(op.Key))
					delete(revs, k)
				} else {
					model[op.Table][string(op.Key)] = string(op.Value)
					revs[k] = rev
				}
			}
		}
		for _, table := range tables[:2] {
			var got []string
			if err := s.Scan(ctx, table, func(k, v []byte) error {
				got = append(got, string(k)+"="+string(v))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, k := range slices.Sorted(maps.Keys(model[table])) {
				want = append(want, k+"="+model[table][k])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Scan(%s) = %q, want %q", table, got, want)
			}
			for k, v := range model[table] {
				gv, gr, err := s.Get(ctx, table, []byte(k))
				if err != nil || string(gv) != v || gr != revs[table+"/"+k] {
					t.Fatalf("Get(%s, %q) = %q at %d, %v; want %q at %d", table, k, gv, gr, err, v, revs[table+"/"+k])
				}
			}
		}
	})
}
