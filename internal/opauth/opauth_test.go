package opauth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAndBearer(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("Load of an empty dir = nil error, want one")
	}
	if err := os.WriteFile(filepath.Join(dir, TokenFile), []byte("  the-token \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(CAFile)), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("Load with a bad CA file = %v, want a 'no PEM certificate' error", err)
	}
	if tok, err := ReadToken(filepath.Join(dir, TokenFile)); err != nil || tok != "the-token" {
		t.Fatalf("ReadToken = %q, %v; want the-token", tok, err)
	}
	b := Bearer("the-token")
	md, err := b.GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer the-token" {
		t.Fatalf("metadata = %v, %v", md, err)
	}
	if !b.RequireTransportSecurity() {
		t.Fatal("the operator token may travel without TLS")
	}
	if _, err := (Credentials{Token: "x"}).DialOptions(); err == nil {
		t.Fatal("DialOptions without a CA = nil error, want one (never the system roots)")
	}
}
