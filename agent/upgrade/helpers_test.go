//go:build unix

package upgrade

import (
	"testing"
	"time"

	"github.com/sutragrid/sutra/agent/fetch"
)

func mustNew(t *testing.T, f fixture, current string) *Upgrader {
	t.Helper()
	u, err := New(Options{DataDir: f.data, Executable: f.target, CurrentVersion: current, NoGuard: true, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustNewFetch(t *testing.T, f fixture, m *testMaster, current string, opt ...func(*Options)) *Upgrader {
	t.Helper()
	fe, err := fetch.New(fetch.Options{BaseURL: m.srv.URL, CacheDir: f.cache, Artifact: "sutra-agent",
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Attempts: 2, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{DataDir: f.data, Executable: f.target, CurrentVersion: current, Fetcher: fe, NoGuard: true, Logger: testLog(t)}
	for _, fn := range opt {
		fn(&o)
	}
	u, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
