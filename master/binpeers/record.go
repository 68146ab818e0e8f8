package binpeers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/artifact"
)

// Limits of what the table holds.
const (
	// MaxValueBytes caps a stored record or claim: anything longer is not
	// one this package wrote.
	MaxValueBytes = 16 << 10
	// MaxURLBytes caps a master's http_url.
	MaxURLBytes = 2048
	// MaxIDBytes caps a master id.
	MaxIDBytes = 253
	// MaxMasters caps the masters a claim lists.
	MaxMasters = 64
	// MaxSize is the largest binary size a record may state (1 TiB).
	MaxSize = 1 << 40
)

// Record is what one master publishes under one file name, stored at
// "<file name>/<master id>".
type Record struct {
	// SHA256 is the file's checksum, lower-case hex.
	SHA256 string `json:"sha256"`
	// Size in bytes.
	Size int64 `json:"size"`
	// HTTPURL is the base URL of the master's HTTP API ("" when it has
	// none to advertise: nobody is redirected to it).
	HTTPURL string `json:"http_url"`
	// At is when the master recorded it.
	At time.Time `json:"at"`
}

// Claim is the name's agreed content, stored at "<file name>": the
// checksum the first master to publish the name chose, and every master
// whose record holds it. Every change of a name's records rewrites the
// claim on condition of its revision, so the claim serializes them.
type Claim struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Masters hold the name with this checksum, sorted.
	Masters []string `json:"masters"`
}

func recordKey(name, id string) []byte { return []byte(name + "/" + id) }
func claimKey(name string) []byte      { return []byte(name) }

// splitKey parses a key of the table: a claim "<name>" (id "") or a
// record "<name>/<id>".
func splitKey(key []byte) (name, id string, err error) {
	name, id, _ = strings.Cut(string(key), "/")
	if _, perr := artifact.ParseFilename(name); perr != nil {
		return "", "", fmt.Errorf("key %q: %w", key, perr)
	}
	if strings.Contains(string(key), "/") {
		if err := validID(id); err != nil {
			return "", "", fmt.Errorf("key %q: %w", key, err)
		}
	}
	return name, id, nil
}

func validID(id string) error {
	if id == "" || len(id) > MaxIDBytes {
		return fmt.Errorf("master id of %d bytes (1..%d)", len(id), MaxIDBytes)
	}
	for _, c := range []byte(id) {
		if c <= ' ' || c == 0x7f || c == '/' {
			return fmt.Errorf("master id %q has a space, a control character or a slash", id)
		}
	}
	return nil
}

// DecodeRecord parses a stored Record strictly: one JSON object of known
// fields, a SHA-256 in lower-case hex, a size in 1..MaxSize, an http(s)
// base URL without user info, query or fragment (or "").
func DecodeRecord(data []byte) (Record, error) {
	var r Record
	if err := decodeStrict(data, &r); err != nil {
		return Record{}, fmt.Errorf("binary record: %w", err)
	}
	var errs []error
	if !isHexSHA256(r.SHA256) {
		errs = append(errs, fmt.Errorf("sha256 %.80q is not 64 lower-case hex digits", r.SHA256))
	}
	if r.Size < 1 || r.Size > MaxSize {
		errs = append(errs, fmt.Errorf("size %d out of 1..%d", r.Size, int64(MaxSize)))
	}
	if r.HTTPURL != "" {
		if err := ValidURL(r.HTTPURL); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Record{}, fmt.Errorf("binary record: %w", err)
	}
	return r, nil
}

// DecodeClaim parses a stored Claim strictly.
func DecodeClaim(data []byte) (Claim, error) {
	var c Claim
	if err := decodeStrict(data, &c); err != nil {
		return Claim{}, fmt.Errorf("binary claim: %w", err)
	}
	var errs []error
	if !isHexSHA256(c.SHA256) {
		errs = append(errs, fmt.Errorf("sha256 %.80q is not 64 lower-case hex digits", c.SHA256))
	}
	if c.Size < 1 || c.Size > MaxSize {
		errs = append(errs, fmt.Errorf("size %d out of 1..%d", c.Size, int64(MaxSize)))
	}
	if len(c.Masters) > MaxMasters {
		errs = append(errs, fmt.Errorf("%d masters (at most %d)", len(c.Masters), MaxMasters))
	} else {
		for _, id := range c.Masters {
			if err := validID(id); err != nil {
				errs = append(errs, err)
			}
		}
		if !slices.IsSorted(c.Masters) || len(slices.Compact(slices.Clone(c.Masters))) != len(c.Masters) {
			errs = append(errs, errors.New("masters not sorted and unique"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Claim{}, fmt.Errorf("binary claim: %w", err)
	}
	return c, nil
}

// ValidURL checks a master's base HTTP URL: absolute http or https with a
// host, no user info, query or fragment, at most MaxURLBytes.
func ValidURL(s string) error {
	if len(s) > MaxURLBytes {
		return fmt.Errorf("http_url of %d bytes (at most %d)", len(s), MaxURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("http_url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("http_url %.100q is not an http(s)://host[:port] base URL", s)
	}
	if strings.ContainsAny(s, " \t\r\n\\") {
		return fmt.Errorf("http_url %.100q has white space or a backslash", s)
	}
	return nil
}

func decodeStrict(data []byte, v any) error {
	if len(data) > MaxValueBytes {
		return fmt.Errorf("%d bytes (at most %d)", len(data), MaxValueBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

func isHexSHA256(s string) bool {
	return len(s) == 64 && !strings.ContainsFunc(s, func(c rune) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f')
	})
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("binpeers: encode %T: %v", v, err)) // plain structs of strings and numbers
	}
	return b
}
