package testutil

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback address ("127.0.0.1:port") that nothing
// listened on a moment ago: it listens on port 0 and closes the listener.
// Another process may take the port before the caller does; tests that
// bind it themselves should prefer a listener on port 0. It also serves
// as an address nothing answers on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on a loopback port: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close the loopback listener: %v", err)
	}
	return addr
}

// FreePort is FreeAddr's port number.
func FreePort(t testing.TB) int {
	t.Helper()
	addr, err := net.ResolveTCPAddr("tcp", FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return addr.Port
}
