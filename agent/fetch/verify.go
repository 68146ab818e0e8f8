package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/release"
)

// Release signatures (Options.Keys, config [security]): after the checksum
// checks, the binary's signature is downloaded from the master
// (GET /binaries/{filename}.minisig, at most release.MaxSignatureSize bytes)
// and the complete partial download is verified against it with
// internal/release before it is ever made executable: the signature must be
// valid, by one of the configured keys, and its trusted comment must name the
// artifact, version, platform and arch that were asked for and the master's
// SHA-256. Any failure is ErrSignature wrapping a *release.Error that says
// which (unsigned, malformed, unknown-key, bad-signature, mismatch); it is
// logged at error level, the download is deleted and the attempt is not
// retried (the master serves the same files again). The signature is kept in
// the cache beside the executable, and cache.Verified checks it again before
// every use.

// ErrSignature: the binary failed its release signature check (permanent:
// the master serves the same files again). release.ReasonOf tells why.
var ErrSignature = errors.New("release signature refused")

// signatureURL names the signature of a binary the master serves.
func (f *Fetcher) signatureURL(info httpapi.BinaryInfo) string {
	return f.binaryURL(info.Path + release.SignatureSuffix)
}

// fetchSignature downloads a binary's signature. A 404 is a *release.Error
// with reason unsigned.
func (f *Fetcher) fetchSignature(ctx context.Context, info httpapi.BinaryInfo) ([]byte, error) {
	u := f.signatureURL(info)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	req.Header.Set("User-Agent", userAgent())
	resp, err := f.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("GET %s: %w", u, ctxErr)
		}
		return nil, fmt.Errorf("GET %s: %w: %w", u, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, &release.Error{Reason: release.Unsigned, Detail: fmt.Sprintf("the master publishes no signature for %s %s (GET %s: 404)", f.opts.Artifact, info.Version, u)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(http.MethodGet, u, resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, release.MaxSignatureSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w: %w", u, ErrUnavailable, err)
	}
	if len(data) > release.MaxSignatureSize {
		return nil, &release.Error{Reason: release.Malformed, Detail: fmt.Sprintf("GET %s: more than %d bytes", u, release.MaxSignatureSize)}
	}
	return data, nil
}

// precheckSignature fetches the signature of info before the binary is
// downloaded and refuses at once what no download can fix: no signature,
// a malformed one, an unknown key, or a trusted comment naming another
// artifact, version, platform, arch, checksum or size than the master's
// metadata. It is only a shortcut (the comment is not authenticated yet);
// verifySignature decides after the download. It returns the signature.
func (f *Fetcher) precheckSignature(ctx context.Context, info httpapi.BinaryInfo) ([]byte, error) {
	if f.opts.Keys.Len() == 0 {
		return nil, nil
	}
	sig, err := f.fetchSignature(ctx, info)
	if err == nil {
		err = f.precheck(info, sig)
	}
	if release.ReasonOf(err) == release.Unsigned && f.opts.AllowUnsigned {
		return nil, nil
	}
	if release.ReasonOf(err) != "" {
		f.log.Error("binary refused before download: its release signature cannot verify",
			"artifact", f.opts.Artifact, "version", info.Version, "platform", f.opts.Platform, "arch", f.opts.Arch,
			"reason", string(release.ReasonOf(err)), "err", err)
		return nil, fmt.Errorf("%s %s for %s/%s: %w: %w", f.opts.Artifact, info.Version, f.opts.Platform, f.opts.Arch, ErrSignature, err)
	}
	return sig, err
}

func (f *Fetcher) precheck(info httpapi.BinaryInfo, sig []byte) error {
	s, err := release.ParseSignature(sig)
	if err != nil {
		return err
	}
	id := release.KeyID(s.KeyID)
	known := false
	for _, k := range f.opts.Keys.IDs() {
		known = known || k == id
	}
	if !known {
		return &release.Error{Reason: release.UnknownKey, Detail: fmt.Sprintf("signed by key %s, which is not one of the configured release keys (%s)", id, strings.Join(f.opts.Keys.IDs(), ", "))}
	}
	got, err := release.ParseComment(s.TrustedComment)
	if err != nil {
		return &release.Error{Reason: release.Mismatch, Detail: err.Error()}
	}
	want := release.Identity{Artifact: f.opts.Artifact, Version: info.Version, Platform: f.opts.Platform, Arch: f.opts.Arch,
		SHA256: info.Checksum, Size: info.SizeBytes}
	if got.Artifact != want.Artifact || got.Version != want.Version || got.Platform != want.Platform ||
		got.Arch != want.Arch || got.SHA256 != want.SHA256 || got.Size != want.Size {
		return &release.Error{Reason: release.Mismatch, Detail: fmt.Sprintf("the signature is for %q, the master offers %q", got.Comment(), want.Comment())}
	}
	return nil
}

// verifySignature checks the complete partial download of info against sig
// (fetched by precheckSignature). It returns the signature to commit with the binary, nil
// when signatures are off or (require_signatures = false) the master
// publishes none.
func (f *Fetcher) verifySignature(ctx context.Context, info httpapi.BinaryInfo, sum string, sig []byte, ss *streamSig) ([]byte, string, error) {
	if f.opts.Keys.Len() == 0 {
		return nil, "", nil
	}
	var err error
	if sig == nil {
		err = &release.Error{Reason: release.Unsigned, Detail: fmt.Sprintf("the master publishes no signature for %s %s", f.opts.Artifact, info.Version)}
	}
	if release.ReasonOf(err) == release.Unsigned && f.opts.AllowUnsigned {
		f.log.Warn("binary is unsigned; accepted because security.require_signatures = false",
			"artifact", f.opts.Artifact, "version", info.Version)
		return nil, "", nil
	}
	if err == nil {
		want := release.Identity{Artifact: f.opts.Artifact, Version: info.Version, Platform: f.opts.Platform,
			Arch: f.opts.Arch, SHA256: sum, Size: info.SizeBytes}
		var got release.Identity
		if ss != nil && ss.v != nil {
			got, err = ss.verify() // fed while downloading: no second pass
			if err == nil && got.SHA256 != sum {
				err = &release.Error{Reason: release.Mismatch, Detail: fmt.Sprintf("the signature vouches for sha256:%s, the file is sha256:%s", got.SHA256, sum)}
			}
		} else {
			got, err = f.cache.VerifyPartial(ctx, want, sig)
		}
		if err == nil {
			s, _ := release.ParseSignature(sig)
			f.log.Info("release signature verified", "artifact", f.opts.Artifact, "version", info.Version,
				"key", release.KeyID(s.KeyID), "signed", got.Comment())
			return sig, release.KeyID(s.KeyID), nil
		}
	}
	if release.ReasonOf(err) == "" {
		return nil, "", err // network or local trouble: the attempt is retried
	}
	f.discard(info.Version)
	f.log.Error("binary refused: its release signature does not verify; deleted it",
		"artifact", f.opts.Artifact, "version", info.Version, "platform", f.opts.Platform, "arch", f.opts.Arch,
		"reason", string(release.ReasonOf(err)), "err", err)
	return nil, "", fmt.Errorf("%s %s for %s/%s: %w: %w", f.opts.Artifact, info.Version, f.opts.Platform, f.opts.Arch, ErrSignature, err)
}

// Signature returns the release signature kept in the cache for a version
// and its path (for the self-update's own check right before the swap).
func (f *Fetcher) Signature(version string) ([]byte, string, error) {
	sig, err := f.cache.ReadSignature(version)
	if err != nil {
		return nil, "", err
	}
	return sig, f.cache.SignaturePath(version), nil
}

// streamSig checks a release signature while the binary downloads
// (release.StreamVerifier): the download feeds it the same bytes as its
// SHA-256, so the file is not read again to verify it. A nil *streamSig
// checks nothing.
type streamSig struct {
	keys release.Keyring
	sig  []byte
	want release.Identity
	v    *release.StreamVerifier
}

// newStreamSig returns the check of sig for info (nil when sig is nil).
func (f *Fetcher) newStreamSig(info httpapi.BinaryInfo, sig []byte) *streamSig {
	if sig == nil {
		return nil
	}
	return &streamSig{keys: f.opts.Keys, sig: sig, want: release.Identity{Artifact: f.opts.Artifact, Version: info.Version,
		Platform: f.opts.Platform, Arch: f.opts.Arch, SHA256: info.Checksum, Size: info.SizeBytes}}
}

// start begins (or, after a restart from zero, begins again) the check.
func (s *streamSig) start() error {
	if s == nil {
		return nil
	}
	s.close()
	v, err := s.keys.NewStreamVerifier(s.sig, s.want)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	s.v = v
	return nil
}

func (s *streamSig) Write(p []byte) (int, error) {
	if s == nil || s.v == nil {
		return len(p), nil
	}
	return s.v.Write(p)
}

// verify checks the signature against everything written.
func (s *streamSig) verify() (release.Identity, error) {
	if s.v == nil {
		return release.Identity{}, &release.Error{Reason: release.BadSignature, Detail: "nothing was verified"}
	}
	id, err := s.v.Verify()
	s.v = nil
	return id, err
}

// close releases the check's goroutine.
func (s *streamSig) close() {
	if s != nil && s.v != nil {
		s.v.Close()
		s.v = nil
	}
}
