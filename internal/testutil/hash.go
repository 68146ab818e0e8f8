package testutil

import (
	"crypto/sha256"
	"encoding/hex"
)

// SHA256 is the lower-case hex SHA-256 of b, the form the catalog, the
// binary API and the agent's cache use for checksums.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
