package auth

// One operator token for several masters (issue 16).
//
// With a shared store (etcd), the operator token lives in it, table meta,
// key "auth/operator-token", as a JSON record {token, created}: the secret
// itself, since every master must compare it. The store must therefore be
// readable by the masters only (etcd client-certificate authentication),
// like the CA key. The first master creates it (32 bytes from crypto/rand)
// with a create-only write; a master losing that race reads the winner's.
// When the store has none yet and the master's admin.token already holds a
// valid token (a master that ran alone), that token is uploaded instead, so
// the operator's CLI keeps working. Every master writes the store's token
// to its own {data_dir}/admin.token (0600, atomic), so `sutra` works on any
// master's host; a file holding another token is replaced, with a warning
// that names the file, never a token.

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/master/store"
)

// SharedTokenKey is the operator token's key in store.TableMeta.
const SharedTokenKey = "auth/operator-token"

// Bounds of a token and of its stored record.
const (
	minTokenLen    = 16
	maxTokenLen    = 512
	maxTokenRecord = 4096
)

// tokenRecord is the stored operator token.
type tokenRecord struct {
	Token   string    `json:"token"`
	Created time.Time `json:"created"`
}

// DecodeTokenRecord parses a stored operator token record. Errors never
// quote the token.
func DecodeTokenRecord(b []byte) (string, error) {
	if len(b) == 0 || len(b) > maxTokenRecord {
		return "", fmt.Errorf("operator token record of %d bytes: want 1 to %d", len(b), maxTokenRecord)
	}
	var r tokenRecord
	if err := json.Unmarshal(b, &r); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return "", fmt.Errorf("operator token record is not JSON (at byte %d)", se.Offset)
		}
		return "", errors.New("operator token record is not a JSON object {token, created}")
	}
	if err := validToken(r.Token); err != nil {
		return "", fmt.Errorf("operator token record: %w", err)
	}
	return r.Token, nil
}

// validToken accepts 16 to 512 printable ASCII characters without spaces.
func validToken(tok string) error {
	if len(tok) < minTokenLen || len(tok) > maxTokenLen {
		return fmt.Errorf("token of %d characters: want %d to %d", len(tok), minTokenLen, maxTokenLen)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return errors.New("token has a space or a byte that is not printable ASCII")
		}
	}
	return nil
}

// readTokenFile reads a token file: exists is false when it does not
// exist; err says why it does not hold a valid token.
func readTokenFile(path string) (tok string, exists bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", true, fmt.Errorf("read operator token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", true, fmt.Errorf("read operator token: %w", err)
	}
	if len(b) > maxTokenFile {
		return "", true, fmt.Errorf("operator token %s is larger than %d bytes", path, maxTokenFile)
	}
	tok = strings.TrimSpace(string(b))
	if err := validToken(tok); err != nil {
		return "", true, fmt.Errorf("operator token %s: %w", path, err)
	}
	return tok, true, nil
}

// LoadOrCreateSharedToken returns the operator token of the masters
// sharing st (see the file comment) and writes it to path, this master's
// admin.token; created reports that this call made it. log (nil: discard)
// gets a warning when path held another token; no token is ever logged.
func LoadOrCreateSharedToken(ctx context.Context, st store.Store, path string, log *slog.Logger) (token string, created bool, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	local, exists, localErr := readTokenFile(path)
	tok, err := readSharedToken(ctx, st)
	if err != nil {
		return "", false, err
	}
	if tok == "" {
		origin := "new"
		if localErr == nil && exists {
			tok, origin = local, "local"
		} else {
			var raw [tokenBytes]byte
			if _, err := rand.Read(raw[:]); err != nil {
				return "", false, fmt.Errorf("make operator token: %w", err)
			}
			tok = base64.RawURLEncoding.EncodeToString(raw[:])
		}
		rec, err := json.Marshal(tokenRecord{Token: tok, Created: time.Now().UTC()})
		if err != nil {
			return "", false, fmt.Errorf("encode operator token: %w", err)
		}
		_, err = st.ApplyIf(ctx, []store.Cond{store.IfAbsent(store.TableMeta, []byte(SharedTokenKey))},
			[]store.Op{store.Put(store.TableMeta, []byte(SharedTokenKey), rec)})
		switch {
		case errors.Is(err, store.ErrConflict):
			if tok, err = readSharedToken(ctx, st); err != nil {
				return "", false, err
			}
			if tok == "" {
				return "", false, errors.New("the shared operator token vanished from the store while this master started: was the store's meta table edited by hand? Restart")
			}
			log.Info("another master created the shared operator token first: using it")
		case err != nil:
			return "", false, fmt.Errorf("store the shared operator token: %w", err)
		case origin == "local":
			log.Info("the local operator token is now the masters' shared token", "file", path)
		default:
			created = true
		}
	}
	if exists && localErr == nil && subtle.ConstantTimeCompare([]byte(local), []byte(tok)) == 1 {
		return tok, created, nil
	}
	if exists {
		reason := "it held another token than the masters' shared one"
		if localErr != nil {
			reason = "it did not hold a valid token"
		}
		log.Warn("operator token file replaced by the masters' shared token: use the new one with sutra (the file has it)", "file", path, "reason", reason)
	}
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write operator token: %w", err)
	}
	return tok, created, nil
}

// readSharedToken reads the store's token; "" when there is none.
func readSharedToken(ctx context.Context, st store.Store) (string, error) {
	b, _, err := st.Get(ctx, store.TableMeta, []byte(SharedTokenKey))
	if err != nil {
		return "", fmt.Errorf("read the shared operator token from the store: %w", err)
	}
	if b == nil {
		return "", nil
	}
	tok, err := DecodeTokenRecord(b)
	if err != nil {
		return "", fmt.Errorf("the shared operator token in the store (%s/%s) is damaged: %w; delete that key "+
			"(etcdctl del) and restart a master to make a new token", store.TableMeta, SharedTokenKey, err)
	}
	return tok, nil
}
