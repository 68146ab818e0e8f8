package supervisor

import (
	"context"
	"sync"
	"time"
)

// EventKind names an event.
type EventKind string

// Event kinds.
const (
	EventStarted       EventKind = "started"
	EventAdopted       EventKind = "adopted"
	EventStartFailed   EventKind = "start_failed"
	EventHealthy       EventKind = "healthy"
	EventHealthFailing EventKind = "health_failing" // a running node's probe failed
	EventUnhealthy     EventKind = "unhealthy"      // unhealthy past the threshold: killed
	EventExited        EventKind = "exited"
	EventRestart       EventKind = "restart" // restart scheduled after Delay
	EventGaveUp        EventKind = "gave_up" // StateFailed
	EventStopping      EventKind = "stopping"
	EventStopped       EventKind = "stopped"
	EventDetached      EventKind = "detached"
	EventReset         EventKind = "reset"
)

// Event is one thing that happened to a node, or one decision about it.
type Event struct {
	Time      time.Time
	Node      string
	Kind      EventKind
	PID       int
	StartTime uint64
	Exit      string
	Delay     time.Duration
	Restarts  int
	Failures  int
	Message   string
}

// eventQueue hands events from the node goroutines to Options.OnEvent
// without ever blocking them: push appends to a bounded FIFO (dropping the
// oldest event when it is full) and starts a delivery goroutine when none
// runs; that goroutine calls OnEvent for each event in order and ends when
// the queue is empty, so an idle supervisor holds no goroutine.
type eventQueue struct {
	mu         sync.Mutex
	buf        []Event
	delivering bool
	dropped    uint64
	idle       chan struct{} // closed (and replaced) whenever delivery drains the queue
}

func (q *eventQueue) push(s *Supervisor, ev Event) {
	f := s.opts.OnEvent
	if f == nil {
		return
	}
	q.mu.Lock()
	if len(q.buf) >= s.opts.EventQueue {
		q.buf = q.buf[1:]
		q.dropped++
		if q.dropped == 1 || q.dropped%1000 == 0 {
			s.log.Warn("event consumer is slow; dropped the oldest undelivered event", "dropped", q.dropped)
		}
	}
	q.buf = append(q.buf, ev)
	start := !q.delivering
	q.delivering = true
	q.mu.Unlock()
	if start {
		go q.deliver(f)
	}
}

func (q *eventQueue) deliver(f func(Event)) {
	for {
		q.mu.Lock()
		if len(q.buf) == 0 {
			q.delivering = false
			if q.idle != nil {
				close(q.idle)
				q.idle = nil
			}
			q.mu.Unlock()
			return
		}
		ev := q.buf[0]
		q.buf[0] = Event{}
		q.buf = q.buf[1:]
		if len(q.buf) == 0 {
			q.buf = nil // let the backing array go
		}
		q.mu.Unlock()
		f(ev)
	}
}

// DroppedEvents is how many events were dropped because OnEvent was slower
// than the nodes produced them (see Options.OnEvent).
func (s *Supervisor) DroppedEvents() uint64 {
	s.events.mu.Lock()
	defer s.events.mu.Unlock()
	return s.events.dropped
}

// WaitEvents waits until every event emitted so far has been delivered to
// OnEvent (the queue is empty and no call is in progress), or ctx ends.
func (s *Supervisor) WaitEvents(ctx context.Context) error {
	q := &s.events
	q.mu.Lock()
	if !q.delivering {
		q.mu.Unlock()
		return nil
	}
	if q.idle == nil {
		q.idle = make(chan struct{})
	}
	idle := q.idle
	q.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
