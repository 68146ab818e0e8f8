package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// MaxListBytes caps the body of a list answer the Client reads.
const MaxListBytes = 64 << 20

// Errors a Client's caller acts on (tell them apart with errors.Is); a
// non-2xx answer is a *StatusError.
var (
	// ErrUnreachable: no complete answer (connection refused, timeout, the
	// body cut short).
	ErrUnreachable = errors.New("no answer from the master's HTTP API")
	// ErrNotContract: a 200 answer whose body is not the contract's JSON
	// (another server on that port, a proxy's page, a body beyond the cap).
	ErrNotContract = errors.New("not an answer of the master's HTTP API")
)

// StatusError is a non-2xx answer, with the message of its JSON error body.
type StatusError struct {
	Method, URL string
	// StatusCode is the HTTP status, Status its text ("404 Not Found").
	StatusCode int
	Status     string
	// Message is the body's "error" field; empty when the body is not the
	// grid's error JSON.
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s %s: %s", e.Method, e.URL, e.Status)
	}
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.URL, e.Status, e.Message)
}

// ErrorMessage returns the message of a JSON error body ({"error": "..."}),
// or "" when body is not one.
func ErrorMessage(body []byte) string {
	var e Error
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Error
}

// Client reads the master's HTTP API. Create it with NewClient.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// NewClient returns a client of the master whose HTTP API is at base
// (http://host:7001 or https://...; a path prefix is kept). hc nil means
// http.DefaultClient; bound each call with its context.
func NewClient(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("master HTTP address %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("master HTTP address %q: want http://host:port or https://host:port", base)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("master HTTP address %q: give only scheme, host, port and path", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, hc: hc}, nil
}

// Base returns the API's base URL, without a trailing slash.
func (c *Client) Base() string { return c.base.String() }

// Binaries lists the storage-server binaries (GET /api/binaries). raw is the
// body as the master sent it, for callers that print it unchanged (fields
// this client does not know included).
func (c *Client) Binaries(ctx context.Context) (list []BinaryInfo, raw []byte, err error) {
	raw, err = c.get(ctx, BinariesPath, MaxListBytes)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, nil, fmt.Errorf("GET %s%s: %w: not the binary list (%v)", c.Base(), BinariesPath, ErrNotContract, err)
	}
	return list, raw, nil
}

// get fetches path and returns the body of a 200 answer, at most limit bytes.
func (c *Client) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	u := c.Base() + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it would repeat the method and URL
		}
		return nil, fmt.Errorf("GET %s: %w: %w", u, ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, &StatusError{Method: http.MethodGet, URL: u, StatusCode: resp.StatusCode, Status: resp.Status, Message: ErrorMessage(body)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", u, ErrUnreachable, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: %w: the answer is larger than %d MiB", u, ErrNotContract, limit>>20)
	}
	return body, nil
}
