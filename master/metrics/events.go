package metrics

import (
	"encoding/json"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sutragrid/sutra/master/store"
)

// Bounds of sutra_events_total's type label. Event types are the master's
// own constants (master/fleet and the packages that record events), never
// client input; the bounds keep a bug from growing the series anyway.
const (
	maxEventTypes   = 64
	maxEventTypeLen = 48
	otherEventType  = "other"
)

// eventCounter counts the fleet events committed, by type, as the store
// decorator sees them written (events since the master started).
type eventCounter struct {
	total *prometheus.CounterVec
	types *labelSet
}

func newEventCounter() *eventCounter {
	return &eventCounter{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "events_total",
			Help: "Fleet events recorded since the master started, by type (AgentRegistered, NodeCrashed, ...)."}, []string{"type"}),
		types: newLabelSet(maxEventTypes),
	}
}

// count counts the event records among ops (puts to the events table).
func (e *eventCounter) count(ops []store.Op) {
	for _, op := range ops {
		if op.Table != store.TableEvents || op.Value == nil {
			continue
		}
		e.total.WithLabelValues(e.types.label(eventType(op.Value))).Inc()
	}
}

// eventType is the "type" field of an encoded event ("" if unreadable).
func eventType(value []byte) string {
	var ev struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(value, &ev) != nil {
		return ""
	}
	return ev.Type
}

// labelSet bounds the values of one label: a plausible name is itself
// until max names were seen, "other" otherwise.
type labelSet struct {
	mu    sync.Mutex
	max   int
	names map[string]bool
}

func newLabelSet(max int) *labelSet { return &labelSet{max: max, names: map[string]bool{}} }

func (l *labelSet) label(name string) string {
	if !validEventType(name) {
		return otherEventType
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.names[name] {
		return name
	}
	if len(l.names) >= l.max {
		return otherEventType
	}
	l.names[name] = true
	return name
}

func validEventType(s string) bool {
	if s == "" || len(s) > maxEventTypeLen {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
