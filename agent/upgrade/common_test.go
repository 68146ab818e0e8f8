package upgrade

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// testLog logs to stderr under -v, else nowhere.
func testLog(t *testing.T) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}
