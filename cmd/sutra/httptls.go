package main

import (
	"crypto/tls"
	"net/http"
	"time"

	"github.com/sutragrid/sutra/internal/opauth"
)

// httpsClient is the client of an https:// master HTTP API (sutra-master
// --http-tls): the master verified against the CA of --ca-cert /
// SUTRA_CACERT (or the master's data dir) only, and the operator token sent
// with every request, so that binary routes behind --private-downloads
// answer too. The token only ever travels over TLS: a plain http:// --http
// gets the default client and no token.
func httpsClient(creds opauth.Credentials) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: creds.Roots}
	return &http.Client{Timeout: 5 * time.Minute, Transport: bearerTransport{token: creds.Token, next: tr}}
}

// bearerTransport adds "Authorization: Bearer <token>" to https requests.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" || b.token == "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
