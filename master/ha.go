package master

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/version"
	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/store"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// shared is the store and the coordinator of a master among several
// (--store etcd); both nil with bbolt, where the control plane opens its
// own store and the master is alone.
type shared struct {
	st    *etcdstore.Store
	coord cluster.Coordinator
}

// close resigns the leadership (at once, not after the lease) and closes
// the store.
func (s *shared) close(log *slog.Logger) {
	if s == nil {
		return
	}
	if s.coord != nil {
		if err := s.coord.Close(); err != nil {
			log.Warn("leave the masters", "err", err)
		}
	}
	if s.st != nil {
		if err := s.st.Close(); err != nil {
			log.Warn("close the etcd store", "err", err)
		}
	}
}

// self is this master as the others see it: the address agents reach it
// on is the first --advertise name, else the listen host when it is not a
// wildcard, else the host name.
func self(opts Options, addrs Addrs, started time.Time) cluster.Member {
	host := ""
	if len(opts.Advertise) > 0 {
		host = opts.Advertise[0]
	} else if h, _, err := net.SplitHostPort(opts.GRPCAddr); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		host = h
	} else if h, err := os.Hostname(); err == nil {
		host = h
	}
	port := func(a string) string {
		_, p, _ := net.SplitHostPort(a)
		return p
	}
	scheme := "http"
	if opts.HTTPTLS {
		scheme = "https"
	}
	id := opts.Store.MasterID
	if id == "" {
		id = "local"
	}
	return cluster.Member{
		ID:       id,
		GRPCAddr: net.JoinHostPort(host, port(addrs.GRPC)),
		HTTPURL:  scheme + "://" + net.JoinHostPort(host, port(addrs.HTTP)),
		Version:  version.Version,
		Started:  started.UTC().Truncate(time.Millisecond),
	}
}

// openShared connects to etcd and joins the masters (--store etcd).
func openShared(ctx context.Context, opts Options, me cluster.Member, log *slog.Logger) (*shared, error) {
	if opts.Store.Backend != StoreEtcd {
		return nil, nil
	}
	tlsConf, err := etcdstore.LoadTLS(opts.Store.EtcdCert, opts.Store.EtcdKey, opts.Store.EtcdCA)
	if err != nil {
		return nil, err // names the flag's file
	}
	prefix := opts.Store.EtcdPrefix
	if prefix == "" {
		prefix = etcdstore.DefaultPrefix
	}
	st, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: opts.Store.EtcdEndpoints, TLS: tlsConf, Prefix: prefix,
		Logger: log.With("component", "etcd")})
	if err != nil {
		return nil, fmt.Errorf("etcd store at %s: %w", strings.Join(opts.Store.EtcdEndpoints, ","), err)
	}
	coord, err := cluster.NewEtcd(ctx, cluster.EtcdOptions{Client: st.Client(), Prefix: prefix, Self: me,
		LeaseTTL: opts.Store.LeaderLease, Logger: log.With("component", "cluster")})
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("join the masters: %w", err)
	}
	return &shared{st: st, coord: coord}, nil
}

// storeOf is the shared store as a store.Store (nil with bbolt).
func (s *shared) storeOf() store.Store {
	if s == nil || s.st == nil {
		return nil
	}
	return s.st
}

func (s *shared) coordinator() cluster.Coordinator {
	if s == nil {
		return nil
	}
	return s.coord
}

// The leader's etcd compaction: every compactEvery, everything older than
// the last compactKeep revisions (well above store.MinWatchHistory, so a
// watcher that fell behind a little resumes instead of reloading).
const (
	compactEvery = 5 * time.Minute
	compactKeep  = 10 * store.MinWatchHistory
)
