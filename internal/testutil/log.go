package testutil

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// LogWriter is an io.Writer that passes each write to t.Log, without the
// trailing newline, so that output shows next to the test that made it
// (with -v, or when the test fails).
func LogWriter(t testing.TB) io.Writer { return logWriter{t} }

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Logger is a text slog.Logger at level that writes to t's log.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(LogWriter(t), &slog.HandlerOptions{Level: level}))
}
