package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/release"
)

// Signatures. A binary FILE may have its release signature FILE.minisig
// beside it (made offline by `sutra release sign`; the master never holds a
// signing key and never decides whether a signature is trusted: agents verify
// it with their configured public keys). The catalog watches .minisig files
// like binaries: each must be a regular file inside the directory of at most
// release.MaxSignatureSize bytes that parses as a minisign signature; it is
// read once into memory (so serving it never touches the disk and a FIFO or
// a huge file can never be served) and attached to the binary of that name,
// whether the binary is published now or later. A signature file appearing,
// changing or disappearing is picked up by the watcher or the rescan.

// sigEntry is a signature file read from the directory.
type sigEntry struct {
	id      fileID
	data    []byte
	keyID   string // minisign key id, upper-case hex
	etag    string // SHA-256 of data
	modTime time.Time
}

// isSignatureName reports whether a directory entry is a signature file.
func isSignatureName(name string) bool {
	return strings.HasSuffix(name, release.SignatureSuffix) && len(name) > len(release.SignatureSuffix)
}

// SignatureName returns the name of a binary's signature file.
func SignatureName(binary string) string { return binary + release.SignatureSuffix }

// checkSig brings the catalog's view of one signature file in line with the disk.
func (c *Catalog) checkSig(name string) {
	bin := strings.TrimSuffix(name, release.SignatureSuffix)
	fi, err := c.statEntry(name)
	if errors.Is(err, errGone) {
		c.dropSig(bin, "signature file deleted or renamed")
		c.mu.Lock()
		delete(c.skipped, name)
		c.mu.Unlock()
		return
	}
	if err != nil {
		c.dropSig(bin, err.Error())
		c.skip(name, err.Error())
		return
	}
	c.mu.RLock()
	cur, ok := c.sigs[bin]
	c.mu.RUnlock()
	if ok && cur.id == idOf(fi) {
		return
	}
	e, err := c.readSig(name)
	if err != nil {
		c.dropSig(bin, err.Error())
		c.skip(name, err.Error())
		return
	}
	c.setSig(bin, e)
}

// readSig reads and parses a signature file without ever blocking on it.
func (c *Catalog) readSig(name string) (sigEntry, error) {
	f, err := openNoBlock(c.root, name)
	if err != nil {
		return sigEntry{}, fmt.Errorf("cannot open: %w", cause(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return sigEntry{}, fmt.Errorf("cannot stat: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return sigEntry{}, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() > release.MaxSignatureSize {
		return sigEntry{}, fmt.Errorf("signature file is %d bytes, more than %d: not a minisign signature", fi.Size(), release.MaxSignatureSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, release.MaxSignatureSize+1))
	if err != nil {
		return sigEntry{}, fmt.Errorf("cannot read: %w", err)
	}
	if len(data) > release.MaxSignatureSize {
		return sigEntry{}, fmt.Errorf("signature file grew past %d bytes: not a minisign signature", release.MaxSignatureSize)
	}
	if len(data) == 0 {
		return sigEntry{}, errors.New("empty signature file")
	}
	s, err := release.ParseSignature(data)
	if err != nil {
		return sigEntry{}, fmt.Errorf("not a minisign signature: %w", err)
	}
	after, err := f.Stat()
	if err != nil || idOf(after) != idOf(fi) || int64(len(data)) != fi.Size() {
		return sigEntry{}, errors.New("signature file changed while it was read")
	}
	sum := sha256.Sum256(data)
	return sigEntry{id: idOf(fi), data: data, keyID: release.KeyID(s.KeyID), etag: hex.EncodeToString(sum[:]), modTime: fi.ModTime()}, nil
}

// setSig records the signature of bin and attaches it to the published binary.
func (c *Catalog) setSig(bin string, e sigEntry) {
	c.mu.Lock()
	c.sigs[bin] = e
	delete(c.skipped, SignatureName(bin))
	b, published := c.byName[bin]
	if published {
		b.Signature, b.SignatureKeyID = SignatureName(bin), e.keyID
		c.byName[bin] = b
	}
	c.mu.Unlock()
	c.log.Info("signature registered", "file", SignatureName(bin), "binary", bin, "key_id", e.keyID, "binary_published", published)
}

// dropSig forgets the signature of bin, if there was one.
func (c *Catalog) dropSig(bin, reason string) {
	c.mu.Lock()
	_, had := c.sigs[bin]
	delete(c.sigs, bin)
	if b, ok := c.byName[bin]; ok {
		b.Signature, b.SignatureKeyID = "", ""
		c.byName[bin] = b
	}
	c.mu.Unlock()
	if had {
		c.log.Info("signature removed", "file", SignatureName(bin), "binary", bin, "reason", reason)
	}
}

// attachSig sets b's signature fields from the signatures known. Call with c.mu held.
func (c *Catalog) attachSig(b *Binary) {
	if e, ok := c.sigs[b.Filename]; ok {
		b.Signature, b.SignatureKeyID = SignatureName(b.Filename), e.keyID
	} else {
		b.Signature, b.SignatureKeyID = "", ""
	}
}

// Signature is a published binary's signature file, as read from the directory.
type Signature struct {
	Name    string    // FILE.minisig
	Binary  string    // FILE
	Data    []byte    // the .minisig content (do not modify)
	KeyID   string    // the signing key's id, as minisign prints it
	ETag    string    // lower-case hex SHA-256 of Data
	ModTime time.Time // of the signature file
}

// Signature returns the signature of the published binary named binary.
// It reports false when the binary is not published or has no signature.
func (c *Catalog) Signature(binary string) (Signature, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if _, ok := c.byName[binary]; !ok {
		return Signature{}, false
	}
	e, ok := c.sigs[binary]
	if !ok {
		return Signature{}, false
	}
	return Signature{Name: SignatureName(binary), Binary: binary, Data: e.data, KeyID: e.keyID, ETag: e.etag, ModTime: e.modTime}, true
}
