// Command etcdmember runs one embedded etcd member
// (go.etcd.io/etcd/server/v3/embed) as its own process, so that
// end-to-end tests and bench/fleet can kill -9 a real member and start it
// again on the same data. It is test tooling, never shipped: it listens on
// plain http (loopback in every caller) and logs warnings to stderr.
//
// When the member has joined its cluster it prints exactly one line to
// stdout:
//
//	etcdmember ready <name> <client url>
//
// SIGTERM or SIGINT stops it cleanly (exit 0).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// options are the member's flags.
type options struct {
	name           string
	dataDir        string
	listenClient   string
	listenPeer     string
	initialCluster string
	state          string
	maxTxnOps      uint
	compaction     int
	fastElection   bool
	readyTimeout   time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("etcdmember", flag.ExitOnError)
	fs.StringVar(&o.name, "name", "m0", "member `name` (must appear in -initial-cluster)")
	fs.StringVar(&o.dataDir, "data-dir", "", "member data `dir` (required)")
	fs.StringVar(&o.listenClient, "listen-client", "http://127.0.0.1:2379", "client `url` (listened on and advertised)")
	fs.StringVar(&o.listenPeer, "listen-peer", "http://127.0.0.1:2380", "peer `url` (listened on and advertised)")
	fs.StringVar(&o.initialCluster, "initial-cluster", "", "`list` name=peer-url,… of every member (default: this member alone)")
	fs.StringVar(&o.state, "state", "new", "initial cluster state: new|existing")
	fs.UintVar(&o.maxTxnOps, "max-txn-ops", 1024, "etcd --max-txn-ops")
	fs.IntVar(&o.compaction, "auto-compaction-retention", 0, "keep this many revisions (0: no auto-compaction)")
	fs.BoolVar(&o.fastElection, "fast-election", false, "TickMs 50 / ElectionMs 500 as internal/etcdtest (default: etcd's 100/1000)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", time.Minute, "give up if the member is not ready within this")
	_ = fs.Parse(os.Args[1:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "etcdmember:", err)
		os.Exit(1)
	}
}

func (o options) config() (*embed.Config, error) {
	var errs []error
	if o.name == "" {
		errs = append(errs, errors.New("-name is required"))
	}
	if o.dataDir == "" {
		errs = append(errs, errors.New("-data-dir is required"))
	}
	if o.state != embed.ClusterStateFlagNew && o.state != embed.ClusterStateFlagExisting {
		errs = append(errs, fmt.Errorf("-state %q: want new or existing", o.state))
	}
	if o.compaction < 0 {
		errs = append(errs, fmt.Errorf("-auto-compaction-retention %d: must be >= 0", o.compaction))
	}
	cu, err := url.Parse(o.listenClient)
	if err != nil || cu.Host == "" {
		errs = append(errs, fmt.Errorf("-listen-client %q: not a url", o.listenClient))
	}
	pu, err := url.Parse(o.listenPeer)
	if err != nil || pu.Host == "" {
		errs = append(errs, fmt.Errorf("-listen-peer %q: not a url", o.listenPeer))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = o.name
	cfg.Dir = o.dataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = o.initialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = o.name + "=" + pu.String()
	}
	cfg.ClusterState = o.state
	cfg.InitialClusterToken = "sutra-etcdmember"
	cfg.MaxTxnOps = o.maxTxnOps
	if o.fastElection {
		cfg.TickMs = 50
		cfg.ElectionMs = 500
	}
	if o.compaction > 0 {
		cfg.AutoCompactionMode = "revision"
		cfg.AutoCompactionRetention = fmt.Sprint(o.compaction)
	}
	zc := zap.NewProductionEncoderConfig()
	zc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(zc), zapcore.Lock(os.Stderr), zapcore.WarnLevel)
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core).With(zap.String("member", o.name)))
	return cfg, nil
}

func run(ctx context.Context, o options) error {
	cfg, err := o.config()
	if err != nil {
		return err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", o.name, err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", o.name, err)
	case <-time.After(o.readyTimeout):
		return fmt.Errorf("member %s not ready within %s", o.name, o.readyTimeout)
	case <-ctx.Done():
		return nil
	}
	fmt.Printf("etcdmember ready %s %s\n", o.name, cfg.AdvertiseClientUrls[0].String())
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", o.name, err)
	case <-e.Server.StopNotify():
		return fmt.Errorf("member %s stopped", o.name)
	}
}
