// Package opauth is the operator's side of the master's authentication
// (issue 12), shared by the sutra CLI, sutra-demo, the benchmarks and the
// end-to-end tests: the operator token travels as "authorization: Bearer
// <token>" metadata on every call, only over TLS, and the master is trusted
// through its CA bundle ({data_dir}/tls/ca.crt) and nothing else (never the
// system roots). The master writes the token to {data_dir}/admin.token (0600)
// on its first start; see master/auth for what the master checks.
package opauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sutragrid/sutra/internal/mtls"
)

// Where a master keeps the operator's credentials, relative to its data dir.
const (
	TokenFile = "admin.token"
	CAFile    = "tls/ca.crt"
)

// maxFile bounds the files read here.
const maxFile = 1 << 20

// Bearer is per-RPC gRPC credentials carrying the operator token.
type Bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// token is never sent in clear.
func (Bearer) RequireTransportSecurity() bool { return true }

// Credentials are what an operator needs to call the master.
type Credentials struct {
	// Token is the operator token.
	Token string
	// Roots holds the master's CA bundle.
	Roots *x509.CertPool
}

// ReadToken reads a token file (surrounding white space dropped).
func ReadToken(path string) (string, error) {
	b, err := readSmall(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("operator token file %s is empty", path)
	}
	return tok, nil
}

// ReadCA reads a PEM CA bundle.
func ReadCA(path string) (*x509.CertPool, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Load reads the credentials a master keeps in dataDir.
func Load(dataDir string) (Credentials, error) {
	tok, err := ReadToken(filepath.Join(dataDir, TokenFile))
	if err != nil {
		return Credentials{}, err
	}
	roots, err := ReadCA(filepath.Join(dataDir, filepath.FromSlash(CAFile)))
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Token: tok, Roots: roots}, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, maxFile+1)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFile)
	}
	return b[:n], nil
}

// DialOptions are the gRPC dial options of an operator: TLS verified
// against c.Roots, the token on every call (none when c.Token is empty).
func (c Credentials) DialOptions() ([]grpc.DialOption, error) {
	if c.Roots == nil {
		return nil, errors.New("no CA bundle to verify the master with")
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(c.Roots, nil)))}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(Bearer(c.Token)))
	}
	return opts, nil
}

// Dial prepares a client connection to the master at addr (no I/O until
// the first call).
func (c Credentials) Dial(addr string) (*grpc.ClientConn, error) {
	opts, err := c.DialOptions()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, opts...)
}
