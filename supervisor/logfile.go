package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// The child writes its stdout and stderr straight into its log file (an
// inherited O_APPEND descriptor), not through a pipe to the supervisor: a
// node must keep running, and keep logging, while the agent restarts or is
// upgraded (a Go child writing to a pipe whose reader is gone dies of
// SIGPIPE). The size cap is therefore enforced by "copytruncate" rotation:
// when the file exceeds the cap the supervisor copies it to <log>.1 (after
// shifting <log>.1 → <log>.2 …) and truncates it; the child's appends then
// continue at offset 0. The cap is checked every Options.LogCheckInterval,
// so a file can overshoot it by what the child writes in one interval, and
// lines written between the copy and the truncation are lost — the usual
// copytruncate trade-off, accepted for a log that must survive the agent.

// openLog opens path for appending, creating it (and its directory).
func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
}

// rotateIfNeeded rotates path when it is larger than maxBytes, keeping at
// most maxFiles files in all (path, path.1 … path.{maxFiles-1}).
func rotateIfNeeded(path string, maxBytes int64, maxFiles int) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	if fi.Size() <= maxBytes {
		return false, nil
	}
	if maxFiles > 1 {
		for i := maxFiles - 1; i >= 2; i-- {
			if err := os.Rename(fmt.Sprintf("%s.%d", path, i-1), fmt.Sprintf("%s.%d", path, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false, fmt.Errorf("rotate log: %w", err)
			}
		}
		if err := copyFile(path, path+".1"); err != nil {
			return false, fmt.Errorf("rotate log: %w", err)
		}
	}
	if err := os.Truncate(path, 0); err != nil {
		return false, fmt.Errorf("truncate log: %w", err)
	}
	return true, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// tailLines returns the last n lines of path, continuing into path.1 when
// the current file (just rotated) holds fewer. Missing files give nil.
func tailLines(path string, n int) []string {
	if n <= 0 {
		return nil
	}
	lines := lastLines(path, n)
	if len(lines) < n {
		lines = append(lastLines(path+".1", n-len(lines)), lines...)
	}
	return lines
}

const tailWindow = 64 << 10

func lastLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(fi.Size()-tailWindow, 0)
	buf := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(buf, off)
	buf = bytes.TrimRight(buf[:k], "\r\n")
	if len(buf) == 0 {
		return nil
	}
	all := strings.Split(string(buf), "\n")
	if off > 0 && len(all) > 1 {
		all = all[1:] // the first line is probably cut
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for i, l := range all {
		all[i] = strings.TrimRight(l, "\r")
	}
	return all
}
