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
	mu    sync.Mutex
	types map[string]bool
}

func newEventCounter() *eventCounter {
	return &eventCounter{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "events_total",
			Help: "Fleet events recorded since the master started, by type (AgentRegistered, NodeCrashed, ...)."}, []string{"type"}),
		types: map[string]bool{},
	}
}

// count counts the event records among ops (puts to the events table).
func (e *eventCounter) count(ops []store.Op) {
	for _, op := range ops {
		if op.Table != store.TableEvents || op.Value == nil {
			continue
		}
		e.total.WithLabelValues(e.label(eventType(op.Value))).Inc()
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

// label is typ when it is a plausible type name and the set of types seen
// is not full, "other" otherwise.
func (e *eventCounter) label(typ string) string {
	if !validEventType(typ) {
		return otherEventType
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.types[typ] {
		return typ
	}
	if len(e.types) >= maxEventTypes {
		return otherEventType
	}
	e.types[typ] = true
	return typ
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
