package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// session is one logged-in operator browser. The cookie holds only id, a
// random value; the operator token is never stored.
type session struct {
	id      string
	csrf    string
	expires time.Time
}

// sessions is the server-side session map, capped in size: when full, the
// session closest to expiry is dropped to make room.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	max int
	ttl time.Duration
	now func() time.Time
}

func newSessions(max int, ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: make(map[string]*session), max: max, ttl: ttl, now: now}
}

func randomID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// create starts a session.
func (s *sessions) create() (*session, error) {
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	csrf, err := randomID()
	if err != nil {
		return nil, err
	}
	now := s.now()
	ss := &session{id: id, csrf: csrf, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	for len(s.m) >= s.max {
		var oldest *session
		for _, v := range s.m {
			if oldest == nil || v.expires.Before(oldest.expires) {
				oldest = v
			}
		}
		delete(s.m, oldest.id)
	}
	s.m[id] = ss
	return ss, nil
}

// get returns the live session with id, or nil. The lookup itself is a map
// access on a 256-bit random value: guessing is not practical.
func (s *sessions) get(id string) *session {
	if len(id) != 43 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[id]
	if ss == nil {
		return nil
	}
	if !s.now().Before(ss.expires) {
		delete(s.m, id)
		return nil
	}
	return ss
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// csrfOK compares a form's CSRF token with the session's in constant time.
func (ss *session) csrfOK(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(ss.csrf)) == 1
}
