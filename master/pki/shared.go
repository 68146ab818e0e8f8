package pki

// One CA for several masters (issue 16).
//
// With Options.Shared, the CA certificate and its private key live in the
// shared store, table meta, key "pki/ca", as a small JSON record
// {cert_pem, key_pem, created}: every master issues client certificates and
// its own server certificate from that one CA, so an agent that pinned the
// CA's fingerprint from its join token trusts every master, and a
// certificate issued by one master is accepted by all. The key in the store
// is the grid's root secret: the store (etcd) must be readable by the
// masters only, with client-certificate authentication (see README, High
// availability), exactly like ca.key on disk today.
//
// Exactly one CA ever: the first master to open writes its CA with
// store.IfAbsent; a master that loses that race (store.ErrConflict) reads
// the winner's and throws its own away, before writing anything to disk.
// When the store has no CA yet but Dir already holds one (a master that ran
// alone before the grid moved to etcd), that CA is uploaded instead of a new
// one, so the agents it enrolled keep trusting it. When Dir holds a
// different CA than the store's, Open refuses, naming both fingerprints:
// silently replacing it would lock out the agents that pinned it, and
// silently keeping it would split the grid in two.
//
// Dir keeps a mirror of the shared CA (ca.key 0600 written first, then
// ca.crt, each temp + fsync + rename), so the files look as they do for a
// master alone and tools reading them work. The server certificate stays
// per master (its own names), issued locally from the shared CA.

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/sutragrid/sutra/master/store"
)

// Keys of the shared records in store.TableMeta.
const (
	// SharedCAKey holds the CA record (certificate and key).
	SharedCAKey = "pki/ca"
	// SharedTicketKeysKey holds the session ticket keys, in the ticket.keys
	// format (tickets.go).
	SharedTicketKeysKey = "pki/ticket-keys"
	// maxCARecord bounds the CA record read from the store.
	maxCARecord = 64 << 10
)

// caRecord is the stored CA.
type caRecord struct {
	CertPEM string    `json:"cert_pem"`
	KeyPEM  string    `json:"key_pem"`
	Created time.Time `json:"created"`
}

// encodeCARecord is the stored form of ca and key.
func encodeCARecord(ca *x509.Certificate, key crypto.Signer, now time.Time) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode CA key: %w", err)
	}
	return json.Marshal(caRecord{
		CertPEM: string(pemCert(ca.Raw)),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Created: now.UTC(),
	})
}

// DecodeCARecord parses a stored CA record: exactly one CA certificate and
// the private key that belongs to it. Errors never quote the key.
func DecodeCARecord(b []byte) (*x509.Certificate, crypto.Signer, error) {
	if len(b) == 0 || len(b) > maxCARecord {
		return nil, nil, fmt.Errorf("CA record of %d bytes: want 1 to %d", len(b), maxCARecord)
	}
	var r caRecord
	if err := json.Unmarshal(b, &r); err != nil {
		// The JSON error may quote the input, which holds the key.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, nil, fmt.Errorf("CA record is not JSON (at byte %d)", se.Offset)
		}
		return nil, nil, errors.New("CA record is not a JSON object {cert_pem, key_pem, created} of strings")
	}
	certs, err := parseCertsPEM([]byte(r.CertPEM))
	if err != nil {
		return nil, nil, fmt.Errorf("CA record: cert_pem: %w", err)
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("CA record: cert_pem holds %d certificates, want 1", len(certs))
	}
	ca := certs[0]
	if !ca.IsCA {
		return nil, nil, errors.New("CA record: cert_pem is not a CA certificate")
	}
	key, err := parseKeyPEM([]byte(r.KeyPEM))
	if err != nil {
		// parseKeyPEM's errors name PEM types and ASN.1 faults, never bytes.
		return nil, nil, fmt.Errorf("CA record: key_pem: %w", err)
	}
	if !samePublicKey(ca.PublicKey, key.Public()) {
		return nil, nil, errors.New("CA record: key_pem does not belong to cert_pem")
	}
	return ca, key, nil
}

// sharedCA returns the store's CA, putting this master's (its local one,
// or a new one) there first when the store has none, and mirrors it into
// Dir. See the file comment.
func (p *PKI) sharedCA(ctx context.Context) (*x509.Certificate, crypto.Signer, error) {
	local, localKey, exists, localErr := p.loadLocalCA()
	ca, key, err := p.readSharedCA(ctx)
	if err != nil {
		return nil, nil, err
	}
	if ca == nil {
		origin := "new"
		switch {
		case exists && localErr != nil:
			// Uploading half a CA, or making another one while Dir holds
			// a CA that agents may have pinned, would lose it for good.
			return nil, nil, localErr
		case exists:
			ca, key, origin = local, localKey, "local"
		default:
			if ca, key, err = p.newCA(); err != nil {
				return nil, nil, err
			}
		}
		rec, err := encodeCARecord(ca, key, p.opts.Now())
		if err != nil {
			return nil, nil, err
		}
		_, err = p.opts.Shared.ApplyIf(ctx, []store.Cond{store.IfAbsent(store.TableMeta, []byte(SharedCAKey))},
			[]store.Op{store.Put(store.TableMeta, []byte(SharedCAKey), rec)})
		switch {
		case errors.Is(err, store.ErrConflict):
			// Another master was first: its CA is the one.
			if ca, key, err = p.readSharedCA(ctx); err != nil {
				return nil, nil, err
			}
			if ca == nil {
				return nil, nil, errors.New("pki: the shared CA vanished from the store while this master opened: was the store's meta table edited by hand? Restart")
			}
			p.log.Info("another master created the shared CA first: using it", "fingerprint", Fingerprint(ca))
		case err != nil:
			return nil, nil, fmt.Errorf("pki: store the shared CA: %w", err)
		case origin == "local":
			p.log.Info("the local CA is now the grid's shared CA", "file", p.path(CACertFile), "fingerprint", Fingerprint(ca))
		default:
			p.log.Info("new shared CA created", "fingerprint", Fingerprint(ca), "expires", ca.NotAfter.UTC())
		}
	}
	if err := p.checkCA(ca, "shared in the store ("+store.TableMeta+"/"+SharedCAKey+")"); err != nil {
		return nil, nil, err
	}
	if local != nil && Fingerprint(local) != Fingerprint(ca) {
		return nil, nil, fmt.Errorf("pki: %s holds a CA with fingerprint %s, but the grid's shared CA in the store has fingerprint %s: "+
			"this master has run alone with its own CA. To join the grid, move %s away and restart (this master then uses the shared CA; "+
			"agents enrolled with the old CA must enroll again). To make the old CA the grid's instead, start this master first, "+
			"against a store that has no CA yet: it uploads its local CA",
			p.path(CACertFile), Fingerprint(local), Fingerprint(ca), p.opts.Dir)
	}
	if local == nil || localKey == nil {
		if exists {
			p.log.Warn("the local copy of the CA does not load: replacing it with the shared CA", "dir", p.opts.Dir, "err", localErr)
		}
		if err := p.writeCA(ca, key); err != nil {
			return nil, nil, err
		}
	} else {
		p.warnMode(p.path(CAKeyFile))
	}
	p.log.Info("shared CA loaded", "fingerprint", Fingerprint(ca), "expires", ca.NotAfter.UTC())
	return ca, key, nil
}

// readSharedCA reads the store's CA; (nil, nil, nil) when there is none.
func (p *PKI) readSharedCA(ctx context.Context) (*x509.Certificate, crypto.Signer, error) {
	b, _, err := p.opts.Shared.Get(ctx, store.TableMeta, []byte(SharedCAKey))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read the shared CA from the store: %w", err)
	}
	if b == nil {
		return nil, nil, nil
	}
	ca, key, err := DecodeCARecord(b)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: the shared CA in the store (%s/%s) is damaged: %w; restore the store from a backup "+
			"(a new CA would lock out every enrolled agent)", store.TableMeta, SharedCAKey, err)
	}
	return ca, key, nil
}
