package upgrade

import (
	"log/slog"
	"os"
	"testing"
)

// testLog logs to stderr under -v, else nowhere.
func testLog(t *testing.T) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}
