package etcdstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/master/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// healthTimeout bounds each member's status request of Health.
const healthTimeout = 2 * time.Second

// Health implements store.HealthReporter: every endpoint's status (leader,
// database size, version, errors), the cluster's alarms (NOSPACE makes it
// read-only), and OK when a quorum read succeeds and no alarm is raised.
func (s *Store) Health(ctx context.Context) store.Health {
	h := store.Health{Backend: "etcd"}
	if _, cancel, err := s.begin(ctx); err != nil {
		h.Detail = err.Error()
		return h
	} else {
		cancel()
	}
	eps := s.cli.Endpoints()
	h.Members = make([]store.MemberHealth, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			m := store.MemberHealth{Endpoint: ep}
			sctx, cancel := context.WithTimeout(ctx, healthTimeout)
			defer cancel()
			st, err := s.cli.Status(sctx, ep)
			switch {
			case err != nil:
				m.Error = err.Error()
				if sctx.Err() != nil {
					m.Error = "no answer in " + healthTimeout.String()
				}
			default:
				m.OK = len(st.Errors) == 0 && st.Leader != 0
				m.Leader = st.Header != nil && st.Leader == st.Header.MemberId
				m.DBSizeBytes = st.DbSize
				m.Version = st.Version
				if len(st.Errors) > 0 {
					m.Error = strings.Join(st.Errors, "; ")
				} else if st.Leader == 0 {
					m.Error = "no leader"
				}
			}
			h.Members[i] = m
		})
	}
	var problems []string
	rctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	_, readErr := s.cli.Get(rctx, s.prefix, clientv3.WithCountOnly())
	alarms, alarmErr := s.cli.AlarmList(rctx)
	wg.Wait()
	h.OK = readErr == nil
	if readErr != nil {
		problems = append(problems, s.wrap(rctx, "quorum read", readErr).Error())
	}
	if alarmErr == nil {
		for _, a := range alarms.Alarms {
			h.OK = false
			what := a.Alarm.String()
			if what == "NOSPACE" {
				what = ErrNoSpace.Error()
			}
			problems = append(problems, fmt.Sprintf("alarm on member %x: %s", a.MemberID, what))
		}
	}
	down := 0
	for _, m := range h.Members {
		if !m.OK {
			down++
		}
	}
	if down > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d etcd members not healthy", down, len(h.Members)))
	}
	h.Detail = strings.Join(problems, "; ")
	return h
}
