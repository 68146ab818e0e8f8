package metrics

import (
	"net/http"
	"strconv"
	"time"
)

// UnmatchedRoute is the route label of requests no route matched.
const UnmatchedRoute = "unmatched"

// ObserveHTTP records one answered HTTP request. route is the ServeMux
// pattern that matched (bounded: the registered patterns), "" when none did;
// never pass the raw path. Methods outside the standard set count as OTHER.
func (m *Metrics) ObserveHTTP(route, method string, code int, bytes int64, d time.Duration) {
	if route == "" {
		route = UnmatchedRoute
	}
	method = knownMethod(method)
	c := strconv.Itoa(code)
	if code < 100 || code > 599 {
		c = "other"
	}
	m.httpRequests.WithLabelValues(route, method, c).Inc()
	m.httpDuration.WithLabelValues(route, method).Observe(d.Seconds())
	if bytes > 0 {
		m.httpBytes.WithLabelValues(route).Add(float64(bytes))
	}
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		m.authFailures.WithLabelValues("http").Inc()
	case http.StatusTooManyRequests:
		m.rateLimited.WithLabelValues("http").Inc()
	}
}

func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}
