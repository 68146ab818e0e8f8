package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestClusterSurvivesOneMember(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	l := c.Leader()
	if l == nil {
		t.Fatal("no leader")
	}
	l.Stop()
	if _, err := cli.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("put with one member down: %v", err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := cli.Get(ctx, "k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v2" {
		t.Fatalf("get = %v, %v", r, err)
	}
}
