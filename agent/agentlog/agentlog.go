// Package agentlog keeps the agent's own log in a size-capped file under its
// data directory, beside the node logs, so that the last lines survive the
// process: a self-update rollback reports them to the master, and operators
// find them without the service manager's journal.
//
// The file is rotated by rename (agent.log -> agent.log.1) when it would
// exceed its cap; writing never fails the caller, so a full disk cannot stop
// the agent from logging to stderr.
package agentlog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// FileName is the log's name inside {agent_data_dir}/logs.
const FileName = "agent.log"

// DefaultMaxBytes caps one file (two are kept).
const DefaultMaxBytes = 10 << 20

// Path is the agent log's path for an agent data directory.
func Path(dataDir string) string { return filepath.Join(dataDir, "logs", FileName) }

// File is an append-only, size-capped log file. Safe for concurrent use.
type File struct {
	path     string
	maxBytes int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating) the log at path, capped at maxBytes (0: default).
func Open(path string, maxBytes int64) (*File, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &File{path: path, maxBytes: maxBytes, f: f, size: st.Size()}, nil
}

// Write appends p, rotating first when p would push the file over its cap.
// It always reports success: losing a log line must not stop the agent.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return len(p), nil
	}
	if l.size > 0 && l.size+int64(len(p)) > l.maxBytes {
		l.rotate()
	}
	n, _ := l.f.Write(p)
	l.size += int64(n)
	return len(p), nil
}

func (l *File) rotate() {
	_ = l.f.Close()
	_ = os.Rename(l.path, l.path+".1")
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		l.f = nil
		return
	}
	l.f, l.size = f, 0
}

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Tail returns up to n last lines of the log at path (and of its rotated
// predecessor when the current file holds fewer), oldest first.
func Tail(path string, n int) []string {
	if n <= 0 {
		return nil
	}
	lines := lastLines(path, n)
	if len(lines) < n {
		lines = append(lastLines(path+".1", n-len(lines)), lines...)
	}
	return lines
}

// lastLines reads at most the last 64 KiB of path and returns its last n lines.
func lastLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	const window = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(st.Size()-window, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil
	}
	if off > 0 { // drop the partial first line
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	all := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(all) == 1 && all[0] == "" {
		return nil
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}
