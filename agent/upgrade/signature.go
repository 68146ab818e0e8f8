package upgrade

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/minio/selfupdate"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/release"
)

// Release signatures of the agent's own binary (Options.PublicKeys): the
// Fetcher already refused a download whose signature does not verify, and
// its cache re-checked it before Ensure returned. Right before the swap, the
// bytes that will be installed (read again from the cache) are verified once
// more against the signature kept in the cache (internal/release: key,
// bytes, and a trusted comment naming sutra-agent, the target version, this
// platform and arch and the checksum), and then by selfupdate's own minisign
// Verifier loaded with the key that signed it (defence in depth). A failure
// leaves the running binary in place; the reason is in the upgrade state the
// agent reports to the master.

// signer is the optional part of a Fetcher that returns the signature kept
// in its cache (*fetch.Fetcher implements it).
type signer interface {
	Signature(version string) (sig []byte, path string, err error)
}

// verifyRelease checks data, the new binary of e, against its cached
// signature and returns a selfupdate Verifier for the same signature and
// key. Without keys it returns nil, nil.
func (u *Upgrader) verifyRelease(e *cache.Entry, data []byte) (*selfupdate.Verifier, error) {
	if len(u.opts.PublicKeys) == 0 {
		return nil, nil
	}
	keys, err := release.ParseKeys(u.opts.PublicKeys)
	if err != nil {
		return nil, err
	}
	s, ok := u.opts.Fetcher.(signer)
	if !ok {
		return nil, &release.Error{Reason: release.Unsigned, Detail: "the fetcher keeps no signatures"}
	}
	sig, sigPath, err := s.Signature(e.Version)
	if err != nil {
		return nil, err
	}
	p, a, err := platform.Current()
	if err != nil {
		return nil, err
	}
	want := release.Identity{Artifact: "sutra-agent", Version: e.Version, Platform: p, Arch: a, SHA256: e.Checksum, Size: int64(len(data))}
	if _, err := keys.Verify(bytes.NewReader(data), sig, want); err != nil {
		return nil, err
	}
	parsed, _ := release.ParseSignature(sig)
	pub := u.keyText(release.KeyID(parsed.KeyID))
	v := selfupdate.NewVerifier()
	if err := v.LoadFromFile(sigPath, pub); err != nil {
		return nil, fmt.Errorf("load the signature into selfupdate's verifier: %w", err)
	}
	return v, nil
}

// keyText returns the "RW…" line of the configured key with id.
func (u *Upgrader) keyText(id string) string {
	for _, t := range u.opts.PublicKeys {
		k, err := release.ParseKeys([]string{t})
		if err != nil || k.Len() != 1 || k.IDs()[0] != id {
			continue
		}
		lines := strings.Split(strings.TrimSpace(t), "\n")
		return strings.TrimSpace(lines[len(lines)-1])
	}
	return ""
}
