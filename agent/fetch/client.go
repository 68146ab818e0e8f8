package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/semver"
)

// errClient marks 4xx answers other than 404/408/429: the request itself is
// wrong, so retrying it cannot help.
var errClient = errors.New("request rejected by the master")

func (f *Fetcher) newHTTPClient(bases []*url.URL) (*retryablehttp.Client, error) {
	dialer := &net.Dialer{Timeout: f.opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:                 f.opts.Proxy,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   f.opts.ConnectTimeout,
		ResponseHeaderTimeout: f.opts.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   2,
		// A binary must arrive byte for byte: no transparent gzip that would
		// hide Content-Length and break Range offsets.
		DisableCompression: true,
		ReadBufferSize:     256 << 10,
	}
	var rt http.RoundTripper = transport
	if f.opts.TLSDir != "" {
		rt = newAgentTransport(f.opts.TLSDir, transport) // tls.go
	}
	rt, err := newFailoverTransport(f, rt, bases) // masters.go
	if err != nil {
		return nil, err
	}
	return &retryablehttp.Client{
		// No http.Client.Timeout: it would cap the body read of large
		// binaries. The per-fetch context deadline and the stall timer bound
		// each request instead.
		HTTPClient:   &http.Client{Transport: rt, CheckRedirect: checkRedirect},
		Logger:       leveledLogger{f.log},
		RetryWaitMin: f.opts.BackoffMin,
		RetryWaitMax: f.opts.BackoffMax,
		RetryMax:     f.opts.Retries,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			retry, rerr := checkRetry(ctx, resp, err)
			if retry && ctx.Err() == nil && (err != nil || resp.StatusCode >= 502) {
				if err == nil {
					err = fmt.Errorf("%s %s: %s: %w", resp.Request.Method, resp.Request.URL, resp.Status, ErrUnavailable)
				}
				f.reportUnreachable(ctx, err)
			}
			return retry, rerr
		},
		Backoff: func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
			return f.retryDelay(lo, hi, attempt, resp, time.Now())
		},
		// Hand back the last response when retries are exhausted, so the
		// caller can report its status and body instead of a bare "giving up".
		ErrorHandler: func(resp *http.Response, err error, tries int) (*http.Response, error) {
			if err != nil {
				if resp != nil {
					resp.Body.Close()
				}
				return nil, fmt.Errorf("after %d attempt(s): %w", tries, err)
			}
			return resp, nil
		},
	}, nil
}

// checkRetry retries connection errors (as retryablehttp judges them: not
// TLS certificate, scheme or redirect-loop errors) and 429, 502, 503, 504.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, nil
	}
	return false, nil
}

// Backoff returns the full-jitter exponential delay before retry number
// attempt (0-based): uniform in [0, min(hi, lo·2^attempt)].
func Backoff(lo, hi time.Duration, attempt int, r *rand.Rand) time.Duration {
	ceil := hi
	if attempt < 62 {
		if c := lo << uint(attempt); c > 0 && c < hi && c>>uint(attempt) == lo {
			ceil = c
		}
	}
	if ceil <= 0 {
		return 0
	}
	return time.Duration(r.Int64N(int64(ceil) + 1))
}

// RetryAfter parses a Retry-After header (seconds or HTTP date) relative to
// now; ok is false when absent or invalid.
func RetryAfter(h string, now time.Time) (d time.Duration, ok bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		if s > int64(24*time.Hour/time.Second) {
			s = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// retryDelay is the transport's Backoff: Retry-After when the server sends
// one (clamped to hi), else full jitter.
func (f *Fetcher) retryDelay(lo, hi time.Duration, attempt int, resp *http.Response, now time.Time) time.Duration {
	if resp != nil {
		if d, ok := RetryAfter(resp.Header.Get("Retry-After"), now); ok {
			return min(d, hi)
		}
	}
	f.randMu.Lock()
	defer f.randMu.Unlock()
	return Backoff(lo, hi, attempt, f.opts.Rand)
}

func (f *Fetcher) backoff(attempt int) time.Duration {
	return f.retryDelay(f.opts.BackoffMin, f.opts.BackoffMax, attempt, nil, time.Time{})
}

// attemptDelay is Ensure's wait before whole attempt number attempt+1 after
// err: the backoff, or longer when the last answer was a 429 or 503 whose
// Retry-After asked for more (clamped to BackoffMax, like the transport's):
// a master that rate-limits the agent is not asked again sooner than it said.
func (f *Fetcher) attemptDelay(attempt int, err error) time.Duration {
	d := f.backoff(attempt)
	var ra *retryAfterError
	if errors.As(err, &ra) {
		d = max(d, min(ra.after, f.opts.BackoffMax))
	}
	return d
}

// retryAfterError is the error of a 429 or 503 answer that carried a
// Retry-After header.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// leveledLogger adapts slog to retryablehttp.LeveledLogger. retryablehttp
// logs every failed try at error level although most are retried; they are
// logged as warnings, and the final failure is returned to the caller.
type leveledLogger struct{ l *slog.Logger }

func (a leveledLogger) Error(msg string, kv ...any) { a.l.Warn("http: "+msg, kv...) }
func (a leveledLogger) Warn(msg string, kv ...any)  { a.l.Warn("http: "+msg, kv...) }
func (a leveledLogger) Info(msg string, kv ...any)  { a.l.Info("http: "+msg, kv...) }
func (a leveledLogger) Debug(msg string, kv ...any) { a.l.Debug("http: "+msg, kv...) }

// apiURL returns the metadata path of the artifact: the design document's
// /api/binaries for storage-server, /api/artifacts/{artifact} otherwise.
func (f *Fetcher) apiURL(elem ...string) string {
	segs := []string{"api", "binaries"}
	if f.opts.Artifact != "storage-server" {
		segs = []string{"api", "artifacts", f.opts.Artifact}
	}
	return f.base.JoinPath(append(segs, elem...)...).String()
}

func (f *Fetcher) binaryURL(name string) string {
	return f.base.JoinPath("binaries", name).String()
}

// Resolve asks the master for the metadata of ver ("latest" or an exact
// version) for the Fetcher's platform and arch, and checks it is usable.
func (f *Fetcher) Resolve(ctx context.Context, ver string) (httpapi.BinaryInfo, error) {
	if ver == "" {
		ver = Latest
	}
	if ver != Latest {
		if _, err := semver.Parse(ver); err != nil {
			return httpapi.BinaryInfo{}, fmt.Errorf("resolve %s: %w", f.opts.Artifact, err)
		}
	}
	u := f.apiURL(ver, f.opts.Platform, f.opts.Arch)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return httpapi.BinaryInfo{}, fmt.Errorf("resolve %s: %w", f.opts.Artifact, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent())
	var info httpapi.BinaryInfo
	if err := f.doJSON(req, u, &info); err != nil {
		if errors.Is(err, ErrNotFound) {
			return httpapi.BinaryInfo{}, fmt.Errorf("the master at %s publishes no %s %s for %s/%s (add %s-<version>-%s-%s to its BINARIES_DIR): %w",
				f.opts.BaseURL, f.opts.Artifact, ver, f.opts.Platform, f.opts.Arch, f.opts.Artifact, f.opts.Platform, f.opts.Arch, err)
		}
		return httpapi.BinaryInfo{}, err
	}
	if err := f.checkInfo(&info, ver); err != nil {
		return httpapi.BinaryInfo{}, fmt.Errorf("GET %s: %w: %w", u, ErrBadResponse, err)
	}
	return info, nil
}

func (f *Fetcher) checkInfo(info *httpapi.BinaryInfo, ver string) error {
	var errs []error
	if _, err := semver.Parse(info.Version); err != nil {
		errs = append(errs, fmt.Errorf("version %q: %v", info.Version, err))
	} else if ver != Latest && info.Version != ver {
		errs = append(errs, fmt.Errorf("asked for version %s, got %s", ver, info.Version))
	}
	if info.Platform != f.opts.Platform || info.Arch != f.opts.Arch {
		errs = append(errs, fmt.Errorf("asked for %s/%s, got %s/%s", f.opts.Platform, f.opts.Arch, info.Platform, info.Arch))
	}
	if info.Artifact != "" && info.Artifact != f.opts.Artifact {
		errs = append(errs, fmt.Errorf("asked for %s, got artifact %q", f.opts.Artifact, info.Artifact))
	}
	info.Checksum = strings.ToLower(info.Checksum)
	if !isHexSHA256(info.Checksum) {
		errs = append(errs, fmt.Errorf("checksum %q is not a hex SHA-256", info.Checksum))
	}
	if info.SizeBytes <= 0 || info.SizeBytes > f.opts.MaxSize {
		errs = append(errs, fmt.Errorf("size_bytes %d is out of range (1 to %d)", info.SizeBytes, f.opts.MaxSize))
	}
	if info.Path == "" || info.Path == "." || info.Path == ".." || strings.ContainsAny(info.Path, "/\\?#%\x00") {
		errs = append(errs, fmt.Errorf("path %q is not a plain file name", info.Path))
	}
	return errors.Join(errs...)
}

// VerifyRemote asks the master's POST .../verify whether checksum is the
// binary's; it returns the master's answer and expected checksum.
func (f *Fetcher) VerifyRemote(ctx context.Context, ver, checksum string) (valid bool, expected string, err error) {
	u := f.apiURL(ver, f.opts.Platform, f.opts.Arch, "verify")
	body, _ := json.Marshal(httpapi.VerifyRequest{Checksum: checksum})
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return false, "", fmt.Errorf("verify: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent())
	var vr httpapi.VerifyResponse
	if err := f.doJSON(req, u, &vr); err != nil {
		return false, "", err
	}
	if vr.Valid == nil {
		return false, "", fmt.Errorf("POST %s: %w: no \"valid\" field in the answer", u, ErrBadResponse)
	}
	return *vr.Valid, strings.ToLower(vr.ExpectedChecksum), nil
}

// doJSON runs req and decodes a 200 JSON answer into v, mapping failures to
// the package's errors.
func (f *Fetcher) doJSON(req *retryablehttp.Request, u string, v any) error {
	resp, err := f.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return fmt.Errorf("%s %s: %w", req.Method, u, ctxErr)
		}
		return fmt.Errorf("%s %s: %w: %w", req.Method, u, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(req.Method, u, resp)
	}
	if isHTML(resp.Header.Get("Content-Type")) {
		return fmt.Errorf("%s %s: %w: an HTML page instead of JSON (is a proxy or login page in front of master_binary_url?)", req.Method, u, ErrBadResponse)
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s %s: %w: decode JSON: %v", req.Method, u, ErrBadResponse, err)
	}
	return nil
}

// statusError describes a non-success answer, with the JSON error body the
// grid's APIs send.
func statusError(method, u string, resp *http.Response) error {
	msg := ""
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if m := httpapi.ErrorMessage(data); m != "" {
		msg = ": " + m
	}
	msg += httpsHint(resp.StatusCode, data)
	var kind error
	switch {
	case resp.StatusCode == http.StatusNotFound:
		kind = ErrNotFound
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		kind = ErrUnavailable
	case resp.StatusCode >= 400:
		kind = errClient
	default:
		kind = ErrBadResponse
	}
	err := fmt.Errorf("%s %s: %s%s: %w", method, u, resp.Status, msg, kind)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := RetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return &retryAfterError{err: err, after: d}
		}
	}
	return err
}

func isHTML(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "text/html" || mt == "application/xhtml+xml")
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
