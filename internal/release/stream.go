package release

import (
	"errors"
	"strings"
	"sync"

	"aead.dev/minisign"
)

// StreamVerifier checks a signature while the file is being downloaded,
// instead of reading the whole file again afterwards (Keyring.Verify): the
// caller writes every byte of the download to it, in order, beside its own
// SHA-256, then calls Verify. The minisign digest (BLAKE2b-512) is computed
// on a goroutine of its own, so on a machine with a spare core the check adds
// almost nothing to the download's wall time.
//
// The signature must be the one published for the file (fetched before the
// download, so an unsigned binary or an unknown key is refused before a byte
// is downloaded); want.SHA256 is the checksum the caller checks the same
// bytes against (the master's advertised one, which the download must match):
// the signature vouches for the bytes written, and its trusted comment must
// name exactly want. Abandon a verifier with Close.
type StreamVerifier struct {
	pk   minisign.PublicKey
	sig  []byte
	s    minisign.Signature
	want Identity

	n      int64
	ch     chan []byte
	pool   sync.Pool
	done   chan struct{}
	mr     *minisign.Reader
	feed   chunkReader
	closed bool
}

// streamChunk bounds the copies queued for the hashing goroutine.
const (
	streamChunk = 256 << 10
	streamQueue = 16 // at most 4 MiB queued
)

// NewStreamVerifier checks what can be checked before the download (the
// signature parses, its key is configured, its trusted comment names want)
// and returns the verifier to write the download to. Close it (Verify does)
// to release its goroutine.
func (k Keyring) NewStreamVerifier(sig []byte, want Identity) (*StreamVerifier, error) {
	if k.Len() == 0 {
		return nil, errors.New("no release public keys configured")
	}
	if want.SHA256 == "" {
		return nil, errors.New("stream verification needs the SHA-256 the caller computes over the same bytes")
	}
	s, err := ParseSignature(sig)
	if err != nil {
		return nil, err
	}
	pk := k.find(s.KeyID)
	if pk == nil {
		return nil, fail(UnknownKey, "signed by key %s, which is not one of the configured release keys (%s)", KeyID(s.KeyID), strings.Join(k.IDs(), ", "))
	}
	got, err := ParseComment(s.TrustedComment)
	if err != nil {
		return nil, fail(Mismatch, "%v", err)
	}
	if err := match(got, want); err != nil {
		return nil, err
	}
	v := &StreamVerifier{pk: *pk, sig: sig, s: s, want: want,
		ch: make(chan []byte, streamQueue), done: make(chan struct{})}
	v.pool.New = func() any { b := make([]byte, streamChunk); return &b }
	v.mr = minisign.NewReader(&v.feed)
	go v.hash()
	return v, nil
}

// chunkReader hands the minisign.Reader the chunk being hashed.
type chunkReader struct{ p []byte }

func (c *chunkReader) Read(b []byte) (int, error) {
	n := copy(b, c.p)
	c.p = c.p[n:]
	return n, nil
}

func (v *StreamVerifier) hash() {
	defer close(v.done)
	for b := range v.ch {
		// minisign.Reader hashes what it reads: let it read the chunk in place.
		v.feed.p = b
		for len(v.feed.p) > 0 {
			_, _ = v.mr.Read(v.feed.p)
		}
		bb := b[:cap(b)]
		v.pool.Put(&bb)
	}
}

// Write queues a copy of p for hashing. It never fails.
func (v *StreamVerifier) Write(p []byte) (int, error) {
	if v.closed {
		return 0, errors.New("release: write after Verify")
	}
	n := len(p)
	for len(p) > 0 {
		bp := v.pool.Get().(*[]byte)
		m := copy(*bp, p)
		v.ch <- (*bp)[:m]
		p = p[m:]
	}
	v.n += int64(n)
	return n, nil
}

// Close stops the hashing goroutine (Verify calls it).
func (v *StreamVerifier) Close() {
	if !v.closed {
		v.closed = true
		close(v.ch)
		<-v.done
	}
}

// Verify waits for the digest of everything written and checks the
// signature. It returns the identity the signature vouches for.
func (v *StreamVerifier) Verify() (Identity, error) {
	v.Close()
	if !v.mr.Verify(v.pk, v.sig) {
		return Identity{}, fail(BadSignature, "the signature by key %s does not match the file or its trusted comment (altered file, or an edited comment)", KeyID(v.s.KeyID))
	}
	got, _ := ParseComment(v.s.TrustedComment) // parsed in NewStreamVerifier
	if got.Size != v.n {
		return Identity{}, fail(Mismatch, "the signature vouches for a file of size %d, %d bytes were written", got.Size, v.n)
	}
	if got.SHA256 != v.want.SHA256 {
		return Identity{}, fail(Mismatch, "the signature vouches for sha256:%s, the file is sha256:%s", got.SHA256, v.want.SHA256)
	}
	return got, nil
}
