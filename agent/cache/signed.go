package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sutragrid/sutra/internal/release"
)

// Signed entries (Options.Keys): the release signature of a version is kept
// beside its executable as {artifact}.minisig, written before the executable
// is renamed into place, and Verified checks it against the configured
// release keys with internal/release before every use: the signature must be
// valid, by a configured key, and its trusted comment must name this
// artifact, version, platform and arch and the SHA-256 and size recorded in
// meta.json. An entry that fails (tampered executable, signature removed or
// replaced, key no longer configured) is removed like a corrupt one, so the
// caller fetches it again and verifies the new download.

// sig is the file name of the signature beside the executable.
func (c *Cache) sig() string { return c.artifact + release.SignatureSuffix }

// SignaturePath returns where a version's release signature is kept.
func (c *Cache) SignaturePath(version string) string {
	return filepath.Join(c.root, version, c.sig())
}

// Signed reports whether this cache checks release signatures.
func (c *Cache) Signed() bool { return c.keys.Len() > 0 }

// signed reports whether the entry in vr must be (or, allowed unsigned,
// can be) checked against its signature.
func (c *Cache) signed(vr *os.Root) bool {
	if c.keys.Len() == 0 {
		return false
	}
	if !c.allowUnsigned {
		return true
	}
	_, err := vr.Lstat(c.sig())
	return err == nil
}

// want is the identity a cached entry's signature must vouch for.
func want(e Entry) release.Identity {
	return release.Identity{Artifact: e.Artifact, Version: e.Version, Platform: e.Platform, Arch: e.Arch,
		SHA256: e.Checksum, Size: e.Size}
}

// readSignature reads the signature kept in vr, refusing anything but a
// small regular file of its own.
func (c *Cache) readSignature(vr *os.Root) ([]byte, error) {
	f, err := openRegular(vr, c.sig(), os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &release.Error{Reason: release.Unsigned, Detail: "no " + c.sig() + " beside the cached executable"}
	}
	if errors.Is(err, errNotRegular) {
		return nil, &release.Error{Reason: release.Malformed, Detail: err.Error()}
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.sig(), err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, release.MaxSignatureSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", c.sig(), err)
	}
	return data, nil
}

// verifySignature checks the open executable f of entry e against the
// signature kept beside it, in one pass over the file.
func (c *Cache) verifySignature(ctx context.Context, vr *os.Root, f *os.File, e Entry) error {
	sig, err := c.readSignature(vr)
	if err != nil {
		return err
	}
	_, err = c.keys.Verify(&ctxReader{ctx: ctx, r: f}, sig, want(e))
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// VerifyPartial checks a complete partial download of id.Version against
// sig with the cache's keys, before CommitSigned makes it executable. It
// returns the identity the signature vouches for (SignedBy: its key).
func (c *Cache) VerifyPartial(ctx context.Context, id release.Identity, sig []byte) (release.Identity, error) {
	vr, err := c.openVersion(id.Version)
	if err != nil {
		return release.Identity{}, err
	}
	defer vr.Close()
	f, err := openRegular(vr, c.partial, os.O_RDONLY)
	if err != nil {
		return release.Identity{}, fmt.Errorf("verify %s: %w", c.PartialPath(id.Version), err)
	}
	defer f.Close()
	got, err := c.keys.Verify(&ctxReader{ctx: ctx, r: f}, sig, id)
	if err != nil && ctx.Err() != nil {
		return release.Identity{}, ctx.Err()
	}
	return got, err
}

// CommitSigned is Commit for a download whose signature sig was verified
// (VerifyPartial): the signature is written beside the executable (0644,
// crash-safe) before the executable and its metadata are put in place, so
// a committed signed entry always has it. A nil sig is Commit.
func (c *Cache) CommitSigned(e Entry, sig []byte) (Entry, error) {
	if len(sig) > release.MaxSignatureSize {
		return Entry{}, fmt.Errorf("commit %s: signature of %d bytes is too large", c.Path(e.Version), len(sig))
	}
	return c.commit(e, sig)
}

// ReadSignature returns the signature kept for a cached version (for
// selfupdate's own minisign check before a swap).
func (c *Cache) ReadSignature(version string) ([]byte, error) {
	vr, err := c.openVersion(version)
	if err != nil {
		return nil, err
	}
	defer vr.Close()
	return c.readSignature(vr)
}

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
