package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sutragrid/sutra/master/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrNoSpace is what every write returns while etcd's NOSPACE alarm is
// raised (its backend reached --quota-backend-bytes): etcd then refuses
// every write until an operator frees space and disarms the alarm.
var ErrNoSpace = errors.New("etcd is out of space (NOSPACE alarm): compact, defragment, then `etcdctl alarm disarm` (see README High availability)")

// Store is a store.Store on etcd. Its methods are safe for concurrent use.
type Store struct {
	cli       *clientv3.Client
	own       bool // Open dialed cli: Close closes it
	prefix    string
	endpoints string // for errors
	timeout   time.Duration
	maxOps    int
	log       *slog.Logger

	root   context.Context // ends at Close
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	watchers sync.WaitGroup

	lastCompact atomic.Int64
}

var _ store.Store = (*Store)(nil)
var _ store.HealthReporter = (*Store)(nil)

// Open connects to etcd (or takes o.Client), checks that it can read the
// grid's prefix, and returns the store; it creates nothing (tables are key
// prefixes). An unreachable etcd is an error naming the endpoints.
func Open(ctx context.Context, o Options) (*Store, error) {
	o.setDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	s := &Store{prefix: o.Prefix, timeout: o.RequestTimeout, maxOps: o.MaxTxnOps, log: o.Logger, cli: o.Client}
	if s.cli == nil {
		eps, _ := ParseEndpoints(strings.Join(o.Endpoints, ","))
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            eps,
			TLS:                  o.TLS,
			DialTimeout:          o.DialTimeout,
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 5 * time.Second,
			PermitWithoutStream:  true,
			Username:             o.Username,
			Password:             o.Password,
			Logger:               zap.NewNop(),
			Context:              context.WithoutCancel(ctx),
		})
		if err != nil {
			return nil, fmt.Errorf("etcd at %s: %w", strings.Join(eps, ","), err)
		}
		s.cli, s.own = cli, true
	}
	s.endpoints = strings.Join(s.cli.Endpoints(), ",")
	s.root, s.cancel = context.WithCancel(context.Background())
	rctx, cancel := context.WithTimeout(ctx, max(o.DialTimeout, o.RequestTimeout))
	defer cancel()
	if _, err := s.cli.Get(rctx, s.prefix, clientv3.WithCountOnly()); err != nil {
		err = s.wrap(rctx, "cannot read the store", err)
		_ = s.Close()
		return nil, err
	}
	s.log.Info("etcd store open", "endpoints", s.endpoints, "prefix", s.prefix, "max_txn_ops", s.maxOps)
	return s, nil
}

// Client is the store's etcd client, shared with the leader election.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the etcd key prefix of the grid's tables.
func (s *Store) Prefix() string { return s.prefix }

// MaxTxnOps is the most distinct keys one batch may write.
func (s *Store) MaxTxnOps() int { return s.maxOps }

// begin checks the store is open and ctx alive, and bounds the request.
func (s *Store) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	stop := context.AfterFunc(s.root, cancel)
	return ctx, func() { stop(); cancel() }, nil
}

// wrap turns an etcd error into one the caller acts on: ctx's own error,
// ErrClosed, ErrNoSpace, store.ErrCompacted, or an error naming the
// endpoints that wraps the cause.
func (s *Store) wrap(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case s.root != nil && s.root.Err() != nil:
		return fmt.Errorf("%s: %w", what, store.ErrClosed)
	case errors.Is(err, rpctypes.ErrNoSpace) || strings.Contains(err.Error(), rpctypes.ErrGRPCNoSpace.Error()):
		return fmt.Errorf("%s: %w (%v)", what, ErrNoSpace, err)
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%s: %w: etcd refused the transaction: its --max-txn-ops is below the master's limit of %d keys (%v)", what, store.ErrInvalidOp, s.maxOps, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("%s: %w: etcd refused the transaction as too large (etcd --max-request-bytes) (%v)", what, store.ErrInvalidOp, err)
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%s: %w (%v)", what, store.ErrCompacted, err)
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("%s: %w", what, context.Canceled)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: etcd at %s did not answer in time: %w", what, s.endpoints, errors.Join(ctx.Err(), err))
	}
	return fmt.Errorf("%s: etcd at %s: %w", what, s.endpoints, err)
}

// retryable reports whether err says a write never reached etcd's raft
// log (no leader, no connection), so sending it again cannot apply it
// twice.
func retryable(err error) bool {
	if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrGRPCNoLeader) {
		return true
	}
	desc := rpctypes.ErrorDesc(err)
	if desc == "there is no address available" || desc == "there is no connection available" || desc == rpctypes.ErrorDesc(rpctypes.ErrGRPCNoLeader) {
		return true
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection refused") {
		return true
	}
	return false
}

// ambiguous reports whether err leaves a write's fate unknown: the
// member took it but its leader died or changed before answering (etcd
// then holds the request until its own timeout: a leader change would
// stall every writer for seconds), the member went away mid-request
// (Unavailable), or this attempt's deadline passed.
func ambiguous(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, rpctypes.ErrLeaderChanged), errors.Is(err, rpctypes.ErrGRPCLeaderChanged),
		errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrGRPCTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrGRPCTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrGRPCTimeoutDueToConnectionLost):
		return true
	}
	switch rpctypes.ErrorDesc(err) {
	case rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaderChanged), rpctypes.ErrorDesc(rpctypes.ErrGRPCTimeout),
		rpctypes.ErrorDesc(rpctypes.ErrGRPCTimeoutDueToLeaderFail), rpctypes.ErrorDesc(rpctypes.ErrGRPCTimeoutDueToConnectionLost):
		return true
	}
	st, ok := status.FromError(err)
	return ok && (st.Code() == codes.DeadlineExceeded || st.Code() == codes.Unavailable)
}

// attemptTimeout bounds one request to etcd inside a call's overall
// timeout, so that a request a dying leader swallowed is sent again to
// the new one instead of stalling the whole call: a third of the call's
// budget, at least a second (never more than the budget).
func attemptTimeout(call time.Duration) time.Duration {
	return min(call, max(call/3, time.Second))
}

// attempt runs one request under attemptTimeout within ctx; the error's
// second result says whether only the attempt's deadline (not ctx's)
// ended it.
func (s *Store) attempt(ctx context.Context, do func(context.Context) error) (err error, attemptTimedOut bool) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout(s.timeout))
	defer cancel()
	err = do(actx)
	return err, err != nil && ctx.Err() == nil && actx.Err() != nil
}

// pause waits delay or until ctx ends, and returns the next delay.
func pause(ctx context.Context, delay time.Duration) (time.Duration, bool) {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return delay, false
	case <-t.C:
	}
	return min(2*delay, 500*time.Millisecond), true
}

// read runs an idempotent request, sending it again within ctx while
// etcd has no leader, lost it, or one attempt got no answer.
func (s *Store) read(ctx context.Context, do func(context.Context) error) error {
	delay := 25 * time.Millisecond
	for {
		err, timedOut := s.attempt(ctx, do)
		if err == nil || ctx.Err() != nil || !(timedOut || retryable(err) || ambiguous(err)) {
			return err
		}
		s.log.Debug("etcd store: read not answered, retrying", "err", err, "delay", delay)
		var ok bool
		if delay, ok = pause(ctx, delay); !ok {
			return err
		}
	}
}

// commit runs the plan's Txn within ctx, sending it again while etcd
// says it never took it (a leader election in progress) or when an
// attempt's fate is unknown (the leader died holding it). A resent Txn
// that finds its conditions broken may be seeing its own earlier
// attempt: when every key already holds the plan's value the write is
// taken as done, otherwise it is the conflict it looks like.
func (s *Store) commit(ctx context.Context, p *plan) (store.Revision, error) {
	delay := 25 * time.Millisecond
	unsure := false
	for {
		var resp *clientv3.TxnResponse
		err, timedOut := s.attempt(ctx, func(actx context.Context) (err error) {
			resp, err = p.txn(s.cli.Txn(actx)).Commit()
			return err
		})
		if err == nil {
			if resp.Succeeded {
				return store.Revision(resp.Header.Revision), nil
			}
			if unsure {
				if rev, done := s.landed(ctx, p); done {
					s.log.Debug("etcd store: an unanswered write had been applied", "keys", len(p.keys), "revision", rev)
					return rev, nil
				}
			}
			return 0, p.conflict(resp)
		}
		again := retryable(err)
		if timedOut || ambiguous(err) {
			again, unsure = true, true
		}
		if !again || ctx.Err() != nil {
			return 0, err
		}
		s.log.Debug("etcd store: write not answered, retrying", "err", err, "delay", delay, "unknown_fate", unsure)
		var ok bool
		if delay, ok = pause(ctx, delay); !ok {
			return 0, err
		}
	}
}

// landed reports whether every key of p already holds what p writes
// (present with p's value, or absent for a delete), all put by one
// revision: an earlier attempt of p was applied. It answers false when
// it cannot tell.
func (s *Store) landed(ctx context.Context, p *plan) (store.Revision, bool) {
	gets := make([]clientv3.Op, len(p.keys))
	for i, k := range p.keys {
		gets[i] = clientv3.OpGet(k)
	}
	var resp *clientv3.TxnResponse
	err := s.read(ctx, func(actx context.Context) (err error) {
		resp, err = s.cli.Txn(actx).Then(gets...).Commit()
		return err
	})
	if err != nil || len(resp.Responses) != len(p.keys) {
		return 0, false
	}
	rev := int64(0)
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().GetKvs()
		if p.ops[i].Value == nil {
			if len(kvs) != 0 {
				return 0, false
			}
			continue
		}
		if len(kvs) != 1 || string(kvs[0].Value) != string(p.ops[i].Value) {
			return 0, false
		}
		if rev != 0 && kvs[0].ModRevision != rev {
			return 0, false
		}
		rev = kvs[0].ModRevision
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return store.Revision(rev), true
}

// Apply implements store.Store: one etcd Txn.
func (s *Store) Apply(ctx context.Context, ops []store.Op) error {
	if len(ops) == 0 {
		_, cancel, err := s.begin(ctx)
		if err != nil {
			return fmt.Errorf("store apply: %w", err)
		}
		cancel()
		return nil
	}
	_, err := s.ApplyIf(ctx, nil, ops)
	return err
}

// ApplyIf implements store.Store: one etcd Txn whose compares are the
// conditions on mod revisions; on a failed compare the error is a
// *store.ConflictError naming the first condition that did not hold.
func (s *Store) ApplyIf(ctx context.Context, conds []store.Cond, ops []store.Op) (store.Revision, error) {
	p, err := makePlan(s.prefix, conds, ops, s.maxOps)
	if err != nil {
		return 0, fmt.Errorf("store apply: %w", err)
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("store apply: %w", err)
	}
	defer cancel()
	rev, err := s.commit(ctx, p)
	var conflict *store.ConflictError
	switch {
	case errors.As(err, &conflict) || errors.Is(err, store.ErrConflict):
		return 0, fmt.Errorf("store apply: %w", err)
	case err != nil:
		return 0, s.wrap(ctx, fmt.Sprintf("store apply (%d keys)", len(p.keys)), err)
	}
	return rev, nil
}

func checkTable(table string) error {
	return store.ValidateOp(store.Op{Table: table, Key: []byte{0}})
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, table string, key []byte) ([]byte, store.Revision, error) {
	if err := store.ValidateOp(store.Op{Table: table, Key: key}); err != nil {
		return nil, 0, fmt.Errorf("store get: %w", err)
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("store get: %w", err)
	}
	defer cancel()
	var resp *clientv3.GetResponse
	err = s.read(ctx, func(actx context.Context) (err error) {
		resp, err = s.cli.Get(actx, Key(s.prefix, table, key))
		return err
	})
	if err != nil {
		return nil, 0, s.wrap(ctx, fmt.Sprintf("store get %s/%q", table, key), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	kv := resp.Kvs[0]
	return value(kv.Value), store.Revision(kv.ModRevision), nil
}

// value is a present value: never nil, even when empty.
func value(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// scanPage is how many keys one request of a Scan reads.
const scanPage = 256

// Scan implements store.Store: pages of scanPage keys, all read at the
// revision of the first, so the scan is one snapshot (a compaction past
// that revision in the middle of a long scan fails it with ErrCompacted).
func (s *Store) Scan(ctx context.Context, table string, fn func(key, value []byte) error) error {
	if err := checkTable(table); err != nil {
		return fmt.Errorf("store scan: %w", err)
	}
	tp := TablePrefix(s.prefix, table)
	end := clientv3.GetPrefixRangeEnd(tp)
	from := tp
	var rev int64
	for {
		rctx, cancel, err := s.begin(ctx)
		if err != nil {
			return fmt.Errorf("store scan %s: %w", table, err)
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(scanPage), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		var resp *clientv3.GetResponse
		err = s.read(rctx, func(actx context.Context) (err error) {
			resp, err = s.cli.Get(actx, from, opts...)
			return err
		})
		if err != nil {
			err = s.wrap(rctx, "store scan "+table, err)
			cancel()
			return err
		}
		cancel()
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv.Key[len(tp):], value(kv.Value)); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Revision implements store.Store: etcd's current revision (of the whole
// cluster: other prefixes' writes advance it too).
func (s *Store) Revision(ctx context.Context) (store.Revision, error) {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("store revision: %w", err)
	}
	defer cancel()
	var resp *clientv3.GetResponse
	err = s.read(ctx, func(actx context.Context) (err error) {
		resp, err = s.cli.Get(actx, s.prefix, clientv3.WithCountOnly())
		return err
	})
	if err != nil {
		return 0, s.wrap(ctx, "store revision", err)
	}
	return store.Revision(resp.Header.Revision), nil
}

// Close implements store.Store: every watch channel closes, later calls
// fail with ErrClosed, and the client closes if Open dialed it.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	s.watchers.Wait()
	if s.own {
		if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("close etcd client: %w", err)
		}
	}
	return nil
}
