//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// writePause is each writer's pause between writes (about 10 writes/s per
// node, so that the final read-back of a 30-minute run stays short).
const writePause = 100 * time.Millisecond

// node is one desired storage node of the model: where it is, and every
// write it acknowledged.
type node struct {
	id, agentID string

	mu       sync.Mutex
	endpoint string
	acked    map[string]string
	order    []string // acknowledged keys, oldest first

	cancel context.CancelFunc
	done   chan struct{}
}

func (n *node) setEndpoint(ep string) {
	n.mu.Lock()
	n.endpoint = ep
	n.mu.Unlock()
}

func (n *node) ep() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.endpoint
}

// model is the soak's view of what should exist: the desired nodes (by id)
// with their acknowledged writes.
type model struct {
	mu     sync.Mutex
	nodes  map[string]*node
	next   int
	writes atomic.Int64 // acknowledged writes, all nodes ever
	failed atomic.Int64 // writes not acknowledged (errors, non-2xx)
	client *http.Client
}

func newModel() *model {
	return &model{nodes: map[string]*node{}, client: &http.Client{Timeout: 3 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}}
}

// newID is a node id never used before in this run.
func (m *model) newID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	return fmt.Sprintf("chaos-n%03d", m.next)
}

// add starts node id's writer.
func (m *model) add(ctx context.Context, id, agentID string) *node {
	wctx, cancel := context.WithCancel(ctx)
	n := &node{id: id, agentID: agentID, acked: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.nodes[id] = n
	m.mu.Unlock()
	go m.writer(wctx, n)
	return n
}

// remove stops node id's writer and forgets its writes (an operator stop
// removes its data from the grid's promise).
func (m *model) remove(id string) {
	m.mu.Lock()
	n := m.nodes[id]
	delete(m.nodes, id)
	m.mu.Unlock()
	if n != nil {
		n.cancel()
		<-n.done
	}
}

func (m *model) list() []*node {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*node, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (m *model) get(id string) *node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[id]
}

// writer PUTs a new key every writePause; a 2xx answer makes it acknowledged.
func (m *model) writer(ctx context.Context, n *node) {
	defer close(n.done)
	for seq := 1; ; seq++ {
		if err := sleep(ctx, writePause); err != nil {
			return
		}
		ep := n.ep()
		if ep == "" {
			continue
		}
		key := fmt.Sprintf("%s-%06d", n.id, seq)
		val := fmt.Sprintf("writer=%s/w1 seq=%d ts=%d", n.id, seq, time.Now().UnixNano())
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+ep+"/kv/"+key, strings.NewReader(val))
		if err != nil {
			continue
		}
		resp, err := m.client.Do(req)
		if err != nil {
			m.failed.Add(1)
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			m.failed.Add(1)
			continue
		}
		n.mu.Lock()
		n.acked[key] = val
		n.order = append(n.order, key)
		n.mu.Unlock()
		m.writes.Add(1)
	}
}

// lostWrite is an acknowledged write not read back with its value.
type lostWrite struct {
	node, key, want, got string
}

func (l lostWrite) String() string {
	return fmt.Sprintf("node %s key %s: want %q, got %s", l.node, l.key, l.want, l.got)
}

// sample is the keys of n to read back: all, or the newest and some random
// older ones.
func (n *node) sample(rng *rand.Rand, all bool) map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]string{}
	if all {
		for k, v := range n.acked {
			out[k] = v
		}
		return out
	}
	for i := max(0, len(n.order)-20); i < len(n.order); i++ {
		out[n.order[i]] = n.acked[n.order[i]]
	}
	for range min(20, len(n.order)) {
		k := n.order[rng.IntN(len(n.order))]
		out[k] = n.acked[k]
	}
	return out
}

// readBack reads keys from n's node (8 at a time) and returns those not
// readable with their value; a key that cannot be read for a network
// error is tried for up to 10 s before it counts.
func (m *model) readBack(ctx context.Context, n *node, keys map[string]string) []lostWrite {
	type kv struct{ k, v string }
	work := make(chan kv)
	var mu sync.Mutex
	var lost []lostWrite
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				got := m.read(ctx, n, w.k)
				if got != "="+w.v {
					mu.Lock()
					lost = append(lost, lostWrite{node: n.id, key: w.k, want: w.v, got: got})
					mu.Unlock()
				}
			}
		}()
	}
	for k, v := range keys {
		work <- kv{k, v}
	}
	close(work)
	wg.Wait()
	sort.Slice(lost, func(i, j int) bool { return lost[i].key < lost[j].key })
	return lost
}

// read returns "=value" for a 200, else a description of what came back.
func (m *model) read(ctx context.Context, n *node, key string) string {
	var last string
	for attempt := range 10 {
		if attempt > 0 && sleep(ctx, time.Second) != nil {
			break
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.ep()+"/kv/"+key, nil)
		if err != nil {
			return err.Error()
		}
		resp, err := m.client.Do(req)
		if err != nil {
			last = "error " + err.Error()
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
		if err != nil {
			last = "error " + err.Error()
			continue
		}
		if resp.StatusCode == http.StatusOK {
			return "=" + string(b)
		}
		if resp.StatusCode == http.StatusNotFound {
			return "404 not found"
		}
		last = fmt.Sprintf("%d %q", resp.StatusCode, b)
	}
	return last
}
