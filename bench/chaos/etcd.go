//go:build linux

package main

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// killEtcdLeader kills -9 the etcd member that leads and starts it again
// on its data after 1-5 s.
func (c *chaos) killEtcdLeader(ctx context.Context) (time.Time, string, error) {
	var leader *etcdMember
	for _, m := range c.g.etcd {
		if isLeader(ctx, m.clientURL) {
			leader = m
			break
		}
	}
	if leader == nil {
		return time.Now(), "no etcd leader found", nil
	}
	leader.kill9()
	down := time.Duration(1+c.rng.IntN(5)) * time.Second
	t0 := time.Now()
	_ = sleep(ctx, down)
	return t0, fmt.Sprintf("%s, restarted after %s", leader.name, down), leader.run()
}

func isLeader(ctx context.Context, url string) bool {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 2 * time.Second})
	if err != nil {
		return false
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := cli.Status(cctx, url)
	return err == nil && st.Leader == st.Header.GetMemberId()
}
