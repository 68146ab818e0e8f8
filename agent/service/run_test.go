package agentsvc

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestProgramStopCancelsAndWaits(t *testing.T) {
	returned := false
	p := newProgram(context.Background(), func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // a graceful shutdown takes a while
		returned = true
		return ctx.Err()
	})
	p.start()
	p.start() // idempotent
	if err := p.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !returned {
		t.Fatal("stop returned before run did")
	}
	if !errors.Is(p.err, context.Canceled) {
		t.Errorf("run error = %v, want context.Canceled", p.err)
	}
}

func TestProgramRunEndsOnItsOwn(t *testing.T) {
	boom := errors.New("boom")
	p := newProgram(context.Background(), func(context.Context) error { return boom })
	p.start()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("done not closed after run returned")
	}
	if err := p.stop(); err != nil || !errors.Is(p.err, boom) {
		t.Errorf("stop = %v, run error %v; want nil, boom", err, p.err)
	}
}

func TestProgramParentContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := newProgram(ctx, func(ctx context.Context) error { <-ctx.Done(); return nil })
	p.start()
	cancel()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not end with its parent context")
	}
}

// Under "go test" the agent is not started by a service manager, so
// RunAsService runs in the foreground with the caller's context.
func TestRunAsServiceInteractive(t *testing.T) {
	if !Interactive() {
		t.Skip("the test runs under a service manager")
	}
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	err := RunAsService(ctx, func(got context.Context) error {
		if got.Value(key{}) != "v" {
			t.Error("run did not get the caller's context")
		}
		return errors.New("ran")
	})
	if err == nil || err.Error() != "ran" {
		t.Errorf("RunAsService = %v, want run's error", err)
	}
}
