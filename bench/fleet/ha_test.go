package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBenchHA runs -masters 3 -etcd with 20 agents: three real masters on
// a three-member etcd (etcdmember processes built by the bench), every
// agent registered and heartbeating without errors, etcd's counters
// read, and after the kill -9 of the leading master another leads and
// every agent (those of the dead master included) heartbeats again.
func TestBenchHA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members and three masters")
	}
	var out bytes.Buffer
	c := config{n: 20, conns: 4, nodes: 2, interval: time.Second, duration: 2 * time.Second, rateLimit: "on", metrics: "on", resume: true,
		masters: 3, etcd: true, out: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := haBench(ctx, c)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if r.heartbeats < 20 || r.errors != 0 {
		t.Errorf("%d heartbeats, %d errors: want at least 20 and none", r.heartbeats, r.errors)
	}
	if len(r.cpu) != 3 || len(r.rss) != 3 || len(r.etcdRSS) != 3 || r.rss[0] <= 1 || r.etcdRSS[0] <= 1 {
		t.Errorf("per master CPU %v RSS %v, per member RSS %v: want three each, measured", r.cpu, r.rss, r.etcdRSS)
	}
	if r.leaderAfter <= 0 || r.leaderAfter > 30*time.Second {
		t.Errorf("new leader after %s: want a new leader within 30 s", r.leaderAfter)
	}
	if r.back <= 0 || r.reattached != r.orphans {
		t.Errorf("agents back after %s, %d of the dead master's %d re-attached: want all", r.back, r.reattached, r.orphans)
	}
	if !strings.Contains(out.String(), "etcd writes:") {
		t.Error("the report has no etcd write rate")
	}
}

// TestEtcdCounters reads the two counters from a /metrics page and
// ignores look-alikes and junk.
func TestEtcdCounters(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP etcd_mvcc_put_total x\n# TYPE etcd_mvcc_put_total counter\netcd_mvcc_put_total 1234\n"+
			"etcd_mvcc_put_total_other 9\netcd_server_proposals_committed_total 5.6e+03\njunk line without value\n")
	}))
	defer srv.Close()
	puts, props, err := etcdCounters(srv.URL)
	if err != nil || puts != 1234 || props != 5600 {
		t.Fatalf("etcdCounters = %v, %v, %v; want 1234, 5600, nil", puts, props, err)
	}
}
