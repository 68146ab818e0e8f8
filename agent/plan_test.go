package agent

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/controlplane"
	"github.com/sutragrid/sutra/agent/state"
)

// The reconcile loop's decisions, table by table: desired against actual
// in, actions out (plan.go).

func wantNodes(gen uint64, version string, nodes ...string) *controlplane.Desired {
	d := &controlplane.Desired{Generation: gen, StorageServerVersion: version}
	for _, n := range nodes {
		id, port, _ := strings.Cut(n, ":")
		p := 0
		if port != "" {
			fmt.Sscan(port, &p)
		}
		d.Nodes = append(d.Nodes, controlplane.DesiredNode{NodeID: id, Port: p})
	}
	return d
}

var (
	binV1 = &cache.Entry{Path: "/cache/1.0.0/storage-server", Checksum: strings.Repeat("1", 64), Version: "1.0.0"}
	binV2 = &cache.Entry{Path: "/cache/2.0.0/storage-server", Checksum: strings.Repeat("2", 64), Version: "2.0.0"}
	// binV1Retagged is binV1's bytes published again as 1.2.0.
	binV1Retagged = &cache.Entry{Path: "/cache/1.2.0/storage-server", Checksum: binV1.Checksum, Version: "1.2.0"}
)

// onBinary is a recorded node started from b (pid 0: not running).
func onBinary(id string, port, pid int, b *cache.Entry) state.Node {
	return state.Node{NodeID: id, Port: port, PID: pid, DataDir: "/data/" + id, BinaryPath: b.Path, Checksum: b.Checksum, Version: b.Version}
}

func record(nodes ...state.Node) map[string]state.Node {
	m := map[string]state.Node{}
	for _, n := range nodes {
		m[n.NodeID] = n
	}
	return m
}

func live(ids ...string) ([]string, map[string]bool) {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return ids, m
}

func TestPlan(t *testing.T) {
	supAB, liveAB := live("a", "b")
	supA, liveA := live("a")
	tests := []struct {
		name string
		w    world
		want actions
	}{{
		name: "new desired node starts from the resolved binary",
		w:    world{Desired: wantNodes(1, "1.0.0", "a"), Binary: binV1},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true, Start: []startNode{{ID: "a"}}},
	}, {
		name: "a fixed port is kept",
		w:    world{Desired: wantNodes(1, "1.0.0", "a:7001"), Binary: binV1},
		want: actions{Want: map[string]int{"a": 7001}, NeedBinary: true, Start: []startNode{{ID: "a", Port: 7001}}},
	}, {
		name: "without a binary a new node waits while the download runs",
		w:    world{Desired: wantNodes(1, "1.0.0", "b", "a")},
		want: actions{Want: map[string]int{"a": 0, "b": 0}, NeedBinary: true, Wait: []string{"a", "b"}},
	}, {
		name: "a desired node that runs is left alone",
		w: world{Desired: wantNodes(1, "1.0.0", "a"), Binary: binV1,
			Record: record(onBinary("a", 7000, 10, binV1)), Supervised: supA, Live: liveA},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true},
	}, {
		name: "a node no longer desired is stopped",
		w: world{Desired: wantNodes(2, "1.0.0", "a"), Binary: binV1,
			Record: record(onBinary("a", 7000, 10, binV1), onBinary("b", 7001, 11, binV1)), Supervised: supAB, Live: liveAB},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true, Stop: []string{"b"}},
	}, {
		name: "a node no longer desired that is being upgraded has its upgrade cancelled first",
		w: world{Desired: wantNodes(2, "2.0.0"), Binary: binV2,
			Record: record(onBinary("a", 7000, 10, binV1)), Supervised: supA, Live: liveA,
			Upgrading: map[string]string{"a": binV2.Checksum}},
		want: actions{Want: map[string]int{}, NeedBinary: true, CancelUpgrades: []string{"a"}},
	}, {
		name: "a node whose stop job runs is neither stopped again nor forgotten",
		w: world{Desired: wantNodes(2, "1.0.0"), Binary: binV1,
			Record: record(onBinary("a", 7000, 10, binV1)), Supervised: supA, Live: liveA, Stopping: map[string]bool{"a": true}},
		want: actions{Want: map[string]int{}, NeedBinary: true},
	}, {
		name: "a stopped node no longer desired is forgotten, a never-started one with its reason",
		w: world{Desired: wantNodes(3, "1.0.0"), Binary: binV1,
			Record: record(onBinary("a", 7000, 0, binV1)), Pending: map[string]string{"p": waitingForBinary}},
		want: actions{Want: map[string]int{}, NeedBinary: true,
			Forget: []forgetNode{{ID: "a"}, {ID: "p", Pending: waitingForBinary}}},
	}, {
		name: "a desired node whose stop job runs is not started until the job ends",
		w: world{Desired: wantNodes(3, "1.0.0", "a"), Binary: binV1,
			Record: record(onBinary("a", 7000, 0, binV1)), Stopping: map[string]bool{"a": true}},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true},
	}, {
		name: "before the master answers, the recorded running nodes and the supervised ones are kept",
		w: world{Binary: binV1, Supervised: supA, Live: liveA,
			Record: record(onBinary("a", 7000, 10, binV1), onBinary("r", 7001, 12, binV1), onBinary("gone", 7002, 0, binV1))},
		want: actions{Want: map[string]int{"a": 0, "r": 7001}, NeedBinary: true, Start: []startNode{{ID: "r", Port: 7001}}},
	}, {
		name: "before the master answers, nothing recorded: no download, nothing forgotten",
		w:    world{Record: record(onBinary("gone", 7002, 0, binV1))},
		want: actions{Want: map[string]int{}},
	}, {
		name: "version changed: one node at a time, the first by id",
		w: world{Desired: wantNodes(4, "2.0.0", "b", "a"), Binary: binV2,
			Record: record(onBinary("a", 7000, 10, binV1), onBinary("b", 7001, 11, binV1)), Supervised: supAB, Live: liveAB},
		want: actions{Want: map[string]int{"a": 0, "b": 0}, NeedBinary: true,
			Upgrade: &upgradeStep{ID: "a", From: *binV1, To: *binV2}},
	}, {
		name: "same bytes re-released as another version: the node still moves to it (it must run and report that version)",
		w: world{Desired: wantNodes(4, "1.2.0", "a", "b"), Binary: binV1Retagged,
			Record: record(onBinary("a", 7000, 10, binV1), onBinary("b", 7001, 11, binV1)), Supervised: supAB, Live: liveAB},
		want: actions{Want: map[string]int{"a": 0, "b": 0}, NeedBinary: true,
			Upgrade: &upgradeStep{ID: "a", From: *binV1, To: *binV1Retagged}},
	}, {
		name: "same bytes and same version: nothing to do",
		w: world{Desired: wantNodes(4, "1.0.0", "a", "b"), Binary: binV1,
			Record: record(onBinary("a", 7000, 10, binV1), onBinary("b", 7001, 11, binV1)), Supervised: supAB, Live: liveAB},
		want: actions{Want: map[string]int{"a": 0, "b": 0}, NeedBinary: true},
	}, {
		name: "while an upgrade towards the binary runs, no other node starts one",
		w: world{Desired: wantNodes(4, "2.0.0", "a", "b"), Binary: binV2,
			Record: record(onBinary("a", 7000, 10, binV1), onBinary("b", 7001, 11, binV1)), Supervised: supAB, Live: liveAB,
			Upgrading: map[string]string{"a": binV2.Checksum}},
		want: actions{Want: map[string]int{"a": 0, "b": 0}, NeedBinary: true},
	}, {
		name: "an upgrade towards another binary than the current one is cancelled",
		w: world{Desired: wantNodes(5, "1.0.0", "a", "b"), Binary: binV1,
			Record: record(onBinary("a", 7000, 10, binV2), onBinary("b", 7001, 11, binV1)), Supervised: supAB, Live: liveAB,
			Upgrading: map[string]string{"a": binV2.Checksum}},
		want: actions{Want: map[string]int{"a": 0, "b": 0}, NeedBinary: true, CancelUpgrades: []string{"a"}},
	}, {
		name: "a binary that failed an upgrade here upgrades no node",
		w: world{Desired: wantNodes(4, "2.0.0", "a"), Binary: binV2, BinaryFailed: true,
			Record: record(onBinary("a", 7000, 10, binV1)), Supervised: supA, Live: liveA},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true},
	}, {
		name: "a node not running is started on the new binary, not upgraded",
		w: world{Desired: wantNodes(4, "2.0.0", "a"), Binary: binV2,
			Record: record(onBinary("a", 7000, 0, binV1))},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true, Start: []startNode{{ID: "a"}}},
	}, {
		name: "a recovered node of unknown checksum is not upgraded",
		w: world{Desired: wantNodes(4, "2.0.0", "a"), Binary: binV2,
			Record: record(state.Node{NodeID: "a", Port: 7000, PID: 10}), Supervised: supA, Live: liveA},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true},
	}, {
		name: "a supervised node whose supervision ended is started again",
		w: world{Desired: wantNodes(4, "1.0.0", "a"), Binary: binV1,
			Record: record(onBinary("a", 7000, 0, binV1)), Supervised: supA, Live: map[string]bool{}},
		want: actions{Want: map[string]int{"a": 0}, NeedBinary: true, Start: []startNode{{ID: "a"}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := plan(tt.w)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

func TestPickPort(t *testing.T) {
	tests := []struct {
		name        string
		first, last int
		used        []int
		taken       []int // the probe says these cannot be bound
		want        int
		wantErr     string
	}{
		{name: "first port", first: 7000, last: 7999, want: 7000},
		{name: "recorded ports are skipped", first: 7000, last: 7999, used: []int{7000, 7001}, want: 7002},
		{name: "ports taken by others are skipped", first: 7000, last: 7999, used: []int{7000}, taken: []int{7001}, want: 7002},
		{name: "the last port of all", first: 65535, last: 65535, want: 65535},
		{name: "nothing free", first: 65535, last: 65535, taken: []int{65535}, wantErr: "no free port in 65535-65535 (0 recorded"},
		{name: "all recorded", first: 7000, last: 7001, used: []int{7000, 7001}, wantErr: "no free port in 7000-7001 (2 recorded"},
		{name: "never beyond 65535", first: 65530, last: 66529, taken: []int{65530, 65531, 65532, 65533, 65534, 65535}, wantErr: "65530-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used, taken := map[int]bool{}, map[int]bool{}
			for _, p := range tt.used {
				used[p] = true
			}
			for _, p := range tt.taken {
				taken[p] = true
			}
			free := func(p int) bool {
				if p < 1 || p > 65535 {
					t.Errorf("probed port %d", p)
				}
				return !taken[p]
			}
			got, err := pickPort(tt.first, tt.last, used, free)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pickPort = %d, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("pickPort = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// A binary that failed a node upgrade is never used again unless the
// desired state named another version since and names it again in a later
// generation — and the master has answered since this agent started.
func TestFailureVerdict(t *testing.T) {
	f := state.Failure{Checksum: binV2.Checksum, Version: "2.0.0", Desired: "2.0.0", Generation: 5}
	sup := f
	sup.Superseded = true
	tests := []struct {
		name           string
		f              state.Failure
		failed         bool
		gen            uint64
		answered       bool
		usable, forget bool
	}{
		{name: "never failed", usable: true, gen: 1, answered: true},
		{name: "failed, same generation", f: f, failed: true, gen: 5, answered: true},
		{name: "failed, later generation still naming it (a spawn)", f: f, failed: true, gen: 6, answered: true},
		{name: "superseded, named again later", f: sup, failed: true, gen: 7, answered: true, usable: true, forget: true},
		{name: "superseded, but the generation is not later", f: sup, failed: true, gen: 5, answered: true},
		{name: "superseded, master not heard since start", f: sup, failed: true, gen: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			usable, forget := failureVerdict(tt.f, tt.failed, tt.gen, tt.answered)
			if usable != tt.usable || forget != tt.forget {
				t.Errorf("failureVerdict = usable %v forget %v, want %v %v", usable, forget, tt.usable, tt.forget)
			}
		})
	}
}

func TestSupersede(t *testing.T) {
	failures := state.Failures{
		"x": {Checksum: "x", Desired: "2.0.0"},
		"y": {Checksum: "y", Desired: "latest"},
		"z": {Checksum: "z", Desired: "1.0.0", Superseded: true},
	}
	if !supersede(failures, "2.0.0") {
		t.Fatal("supersede(2.0.0) = no change, want latest's failure marked")
	}
	if failures["x"].Superseded || !failures["y"].Superseded || !failures["z"].Superseded {
		t.Errorf("after supersede(2.0.0): %+v, want only the failure at 2.0.0 not superseded", failures)
	}
	if supersede(failures, "2.0.0") {
		t.Error("supersede twice reported a change")
	}
}
