package fleet

import (
	"context"
	"testing"

	"github.com/sutragrid/sutra/master/store"
)

// FuzzApplyChange feeds arbitrary store changes (what another master, or
// a damaged store, may hold) to the function Follow and reconcile apply:
// it never panics, refuses records that name another key, and keeps every
// node attached to a known agent or held as an orphan.
func FuzzApplyChange(f *testing.F) {
	f.Add(uint8(0), []byte("a1"), []byte(`{"id":"a1","master":"B","health":"healthy","generation":3}`), int64(5), false)
	f.Add(uint8(0), []byte("a1"), []byte(`{"id":"a2"}`), int64(5), false)
	f.Add(uint8(0), []byte("a1"), []byte(`null`), int64(5), false)
	f.Add(uint8(0), []byte("a1"), []byte(``), int64(9), true)
	f.Add(uint8(1), []byte("n1"), []byte(`{"node_id":"n1","agent_id":"ghost","desired":true}`), int64(6), false)
	f.Add(uint8(1), []byte("n1"), []byte(`{"node_id":"n1","agent_id":"a1","status":{"node_id":"n1","state":"running","last_log_lines":["x"]}}`), int64(7), false)
	f.Add(uint8(1), []byte("n1"), []byte(`{"node_id":"n2","agent_id":"a1"}`), int64(7), false)
	f.Add(uint8(2), []byte{0, 0, 0, 0, 0, 0, 0, 9}, []byte(`{"seq":9,"type":"X"}`), int64(8), false)
	f.Add(uint8(2), []byte{0, 0, 0, 0, 0, 0, 0, 9}, []byte(`{"seq":18446744073709551615,"type":"X"}`), int64(8), false)
	f.Add(uint8(2), []byte("short"), []byte(`{"seq":1}`), int64(8), false)
	f.Add(uint8(3), []byte("version_defaults"), []byte(`{"storage_server_version":1}`), int64(10), false)
	f.Add(uint8(4), []byte("a1"), []byte(`{"agent_id":"a1","active":true,"serials":["ff"]}`), int64(11), false)
	f.Add(uint8(4), []byte("a1"), []byte(`{"agent_id":"zz"}`), int64(11), false)
	f.Add(uint8(0), []byte("a1"), []byte(`{"id":"a1","registered_at":"99999-01-01T00:00:00Z"}`), int64(-3), false)
	st, err := store.OpenDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	f.Fuzz(func(t *testing.T, table uint8, key, value []byte, rev int64, del bool) {
		fl, err := New(context.Background(), Options{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		fl.mu.Lock()
		for _, c := range []store.Change{
			{Table: store.TableAgents, Key: []byte("a1"), Value: []byte(`{"id":"a1","master":"local","max_storage_nodes":2}`), Rev: 2},
			{Table: store.TableNodes, Key: []byte("n0"), Value: []byte(`{"node_id":"n0","agent_id":"a1","desired":true}`), Rev: 3},
			{Table: store.TableEvents, Key: seqKey(1), Value: []byte(`{"seq":1,"type":"AgentRegistered"}`), Rev: 2},
		} {
			if err := fl.applyLocked(c, true); err != nil {
				t.Fatal(err)
			}
		}
		fl.mu.Unlock()
		if del {
			value = nil
		} else if value == nil {
			value = []byte{}
		}
		c := store.Change{Table: followTables[int(table)%len(followTables)], Key: key, Value: value, Rev: store.Revision(rev)}
		fl.mu.Lock()
		_ = fl.applyLocked(c, true)
		for id, n := range fl.nodes {
			a := fl.agents[n.AgentID]
			if a == nil || a.nodes[id] != n || n.ID != id {
				t.Errorf("node %s (agent %q) is not attached to its agent", id, n.AgentID)
			}
		}
		for id, a := range fl.agents {
			if a.rec.ID != id {
				t.Errorf("agent under %q names %q", id, a.rec.ID)
			}
		}
		for i := 1; i < len(fl.events); i++ {
			if fl.events[i].Seq <= fl.events[i-1].Seq {
				t.Errorf("event log out of order at %d", i)
			}
		}
		fl.mu.Unlock()
		_ = fl.Agents()
		_ = fl.Cluster()
		_ = fl.Events(0, 0)
	})
}
