package diagnose

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/agent/config"
	"github.com/sutragrid/sutra/internal/release"
)

// CacheEntry is one cached version and what checking it found. Nothing
// cached is executed, and a corrupt entry is reported, not removed.
type CacheEntry struct {
	Artifact string `json:"artifact"`
	Version  string `json:"version"`
	Path     string `json:"path,omitempty"`
	Size     int64  `json:"size_bytes"`
	Checksum string `json:"checksum,omitempty"`
	// Verified: the executable hashes to the checksum recorded when it was
	// downloaded.
	Verified bool `json:"verified"`
	// Signature: "verified by <key id>", "unsigned", "not checked (no
	// release_public_keys)" or why it failed.
	Signature string `json:"signature"`
	Error     string `json:"error,omitempty"`
}

// artifacts are the executables the agent caches.
var artifacts = []string{"storage-server", "sutra-agent"}

func cacheReport(ctx context.Context, r *Report, cfg *config.Config) []CacheEntry {
	keys, kerr := cfg.Security.Keyring()
	if kerr != nil {
		r.problem("security.release_public_keys: %v", kerr)
	}
	out := []CacheEntry{}
	for _, art := range artifacts {
		c, err := cache.New(cache.Options{Dir: cfg.Agent.CacheDir, Artifact: art})
		if err != nil {
			r.problem("cache %s: %v", art, err)
			continue
		}
		versions, err := c.Versions()
		if err != nil {
			r.problem("cache %s in %s: %v", art, cfg.Agent.CacheDir, err)
			continue
		}
		for _, v := range versions {
			e := checkEntry(ctx, c, art, v, keys, cfg.Security.Require())
			if e.Error != "" {
				if art == "storage-server" || e.Verified {
					r.problem("cache %s %s: %s", art, v, e.Error)
				} else {
					r.warn("cache %s %s: %s", art, v, e.Error)
				}
			}
			out = append(out, e)
		}
	}
	return out
}

// checkEntry re-hashes one entry read-only (cache.Verified would delete a
// corrupt one) and checks its signature when keys are configured.
func checkEntry(ctx context.Context, c *cache.Cache, art, v string, keys release.Keyring, require bool) CacheEntry {
	e := CacheEntry{Artifact: art, Version: v, Signature: "not checked (no security.release_public_keys)"}
	meta, err := c.Lookup(v)
	if errors.Is(err, cache.ErrNotCached) {
		e.Error = "incomplete (a download in progress or interrupted; no metadata)"
		e.Signature = "-"
		return e
	}
	if err != nil {
		e.Error = err.Error()
		return e
	}
	e.Path, e.Size, e.Checksum = meta.Path, meta.Size, meta.Checksum
	f, err := openNoBlock(meta.Path)
	if err != nil {
		e.Error = fmt.Sprintf("executable: %v", err)
		return e
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		e.Error = fmt.Sprintf("executable %s is not a regular file", meta.Path)
		return e
	}
	h := sha256.New()
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: f})
	if err != nil {
		e.Error = fmt.Sprintf("hash: %v", err)
		return e
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != meta.Checksum || n != meta.Size {
		e.Error = fmt.Sprintf("CORRUPT: hashes to %s (%d bytes), recorded %s (%d bytes); the agent removes it and downloads again when it next needs it",
			sum, n, meta.Checksum, meta.Size)
		return e
	}
	e.Verified = true
	if keys.Len() == 0 {
		return e
	}
	sig, err := c.ReadSignature(v)
	if err != nil {
		if release.ReasonOf(err) == release.Unsigned {
			e.Signature = "unsigned"
			if require {
				e.Error = "no release signature and security.require_signatures is on: the agent will not use it"
			}
			return e
		}
		e.Signature = "unreadable: " + err.Error()
		e.Error = e.Signature
		return e
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		e.Error = err.Error()
		return e
	}
	want := release.Identity{Artifact: meta.Artifact, Version: meta.Version, Platform: meta.Platform, Arch: meta.Arch,
		SHA256: meta.Checksum, Size: meta.Size}
	if _, err := keys.Verify(&ctxReader{ctx: ctx, r: f}, sig, want); err != nil {
		e.Signature = "FAILED: " + err.Error()
		e.Error = "release signature " + e.Signature
		return e
	}
	e.Signature = "verified"
	if meta.SignedBy != "" {
		e.Signature += " by key " + meta.SignedBy
	}
	return e
}

// ctxReader stops a long hash when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
