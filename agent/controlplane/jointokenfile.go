package controlplane

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/sutragrid/sutra/internal/atomicfile"
	"github.com/sutragrid/sutra/internal/jointoken"
)

// The join token file (zero-touch bootstrap). `sutra-agent service install
// --join-token …` leaves the token in {agent_data_dir}/join-token (0600,
// written temp + fsync + rename + directory fsync), not in the service
// definition (where `systemctl show` would print it) nor in the operator's
// config. The agent reads it at start when no other source gives a token
// (run --join-token > SUTRA_JOIN_TOKEN > agent.join_token > this file) and
// deletes it once it has enrolled: from then on its certificate is its
// identity and the secret is gone from the disk.
const JoinTokenFile = "join-token"

// maxJoinTokenFile bounds what ReadJoinTokenFile reads.
const maxJoinTokenFile = 4096

// WriteJoinTokenFile checks the syntax of token and stores it in dataDir
// (created 0700 if missing) as JoinTokenFile, mode 0600. It returns the
// file's path. Errors never quote the token.
func WriteJoinTokenFile(dataDir, token string) (string, error) {
	if _, err := jointoken.Parse(token); err != nil {
		return "", fmt.Errorf("join token: %w (copy the whole token 'sutra tokens create' printed)", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("store join token: %w", err)
	}
	path := filepath.Join(dataDir, JoinTokenFile)
	if err := atomicfile.Write(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store join token: %w", err)
	}
	return path, nil
}

// ReadJoinTokenFile returns the token in path: "" without error when the
// file does not exist. A file that others than its owner may read (on
// Unix), is larger than 4 KiB, or holds no valid token is an error that
// does not quote its contents.
func ReadJoinTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("join token file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("join token file %s is readable by others (mode %v): chmod 600 it, or remove it and create a new token (sutra tokens create)", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxJoinTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	if len(b) > maxJoinTokenFile {
		return "", fmt.Errorf("join token file %s is larger than %d bytes: it holds no join token", path, maxJoinTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if _, err := jointoken.Parse(tok); err != nil {
		return "", fmt.Errorf("join token file %s: %w", path, err)
	}
	return tok, nil
}

// forgetJoinTokenFile deletes the join token file after an enrollment.
func (c *Client) forgetJoinTokenFile() {
	path := c.opts.JoinTokenFile
	if path == "" {
		return
	}
	switch err := os.Remove(path); {
	case err == nil:
		_ = atomicfile.SyncDir(filepath.Dir(path))
		c.opts.Logger.Info("enrolled: join token file deleted", "path", path)
	case !errors.Is(err, fs.ErrNotExist):
		c.opts.Logger.Warn("enrolled, but the join token file could not be deleted: remove it by hand", "path", path, "err", err)
	}
}
