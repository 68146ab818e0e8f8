// Package testutil holds the helpers the module's tests share, each
// declared once: a free loopback address (FreeAddr, FreePort), a
// goroutine-safe buffer for logs and child output (SyncBuffer), a
// poll-until-true wait with a deadline (WaitFor), a logger that writes to
// the test's log (Logger), a clock the test moves by hand (Clock), a
// `go build` of the helper programs tests run (GoBuild), a hex SHA-256
// (SHA256) and a named pipe where a file is expected (Mkfifo). It is
// test-only: only _test.go files import it (internal/archtest fails
// otherwise), and it depends on the standard library only, so that
// supervisor's tests may use it too.
package testutil
