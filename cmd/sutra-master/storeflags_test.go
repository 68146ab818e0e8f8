package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestStoreSettings(t *testing.T) {
	bad := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--store", "raft"}, nil, `--store="raft": want bbolt or etcd`},
		{nil, map[string]string{"SUTRA_STORE": "etcd"}, "--store etcd needs --etcd-endpoints"},
		{[]string{"--etcd-endpoints", "http://127.0.0.1:2379"}, nil, "the store is bbolt: add --store etcd"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "ftp://x:1"}, nil, "--etcd-endpoints"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "http://a:2379", "--master-id", "../etc"}, nil, `--master-id="../etc"`},
		{[]string{"--store", "etcd", "--etcd-endpoints", "http://a:2379", "--leader-lease", "1s"}, nil, `--leader-lease="1s"`},
		{[]string{"--store", "etcd", "--etcd-endpoints", "http://a:2379", "--etcd-prefix", "sutra"}, nil, "--etcd-prefix"},
		{[]string{"--store", "etcd", "--etcd-endpoints", "http://a:2379", "--etcd-cert", "c.pem"}, nil, "--etcd-cert and --etcd-key go together"},
	}
	for _, tc := range bad {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, &out, &out, env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %v %v = %v, want it to say %q", tc.args, tc.env, err, tc.want)
		}
	}
	val := map[string]string{"store": "etcd", "etcd-endpoints": "http://127.0.0.1:2379, http://127.0.0.2:2379", "etcd-prefix": "/grid-a/",
		"master-id": "HOSTNAME-GRPCPORT", "leader-lease": "3s"}
	o, err := storeSettings(val, map[string]string{}, 7000)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.EtcdEndpoints) != 2 || o.EtcdPrefix != "/grid-a/" || o.LeaderLease != 3*time.Second || !strings.HasSuffix(o.MasterID, "-7000") || !masterIDPattern.MatchString(o.MasterID) {
		t.Fatalf("settings %+v", o)
	}
}
