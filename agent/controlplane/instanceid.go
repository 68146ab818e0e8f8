package controlplane

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// InstanceIDFile is the name of the agent's instance id inside its data
// directory.
const InstanceIDFile = "instance-id"

// LoadInstanceID returns the agent's instance id, kept in dir/instance-id:
// 128 random bits (crypto/rand) in hex, created on first use and kept
// afterwards. The master refuses a registration whose instance id differs
// from the recorded one while the recorded agent is alive, which tells two
// machines configured with one agent_id apart. The id is not a secret: it
// only makes an accidental clash visible.
//
// The file is created atomically and only when absent (a temp file linked
// into place), so two agents started at once on one data dir agree on one
// id. A file that does not hold an id is moved aside (instance-id.corrupt-
// <time>) and replaced; replaced reports that. A file that cannot be read is
// an error: it is never overwritten.
func LoadInstanceID(dir string) (id string, replaced string, err error) {
	path := filepath.Join(dir, InstanceIDFile)
	for range 3 {
		id, err := readInstanceID(path)
		switch {
		case err == nil:
			return id, replaced, nil
		case errors.Is(err, errBadInstanceID):
			dst := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
			if rerr := os.Rename(path, dst); rerr != nil {
				return "", "", fmt.Errorf("%w; moving it aside: %w", err, rerr)
			}
			replaced = dst
		case errors.Is(err, fs.ErrNotExist):
		default:
			return "", "", err
		}
		if err := createInstanceID(dir, path); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", "", err
		}
		// Created, or another agent created it first: read what is there.
	}
	return "", "", fmt.Errorf("instance id %s: keeps changing while being created", path)
}

var errBadInstanceID = errors.New("not an instance id")

func readInstanceID(path string) (string, error) {
	// Stat before opening: opening a FIFO planted at the path would block.
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return "", fmt.Errorf("instance id %s is not a regular file: %w", path, errBadInstanceID)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("read instance id: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return "", fmt.Errorf("read instance id %s: %w", path, err)
	}
	id := strings.TrimSpace(string(data))
	if !validInstanceID(id) {
		// The content is not quoted: the file could be a link to anything.
		return "", fmt.Errorf("instance id %s holds %d bytes that are not 32 lowercase hex digits: %w", path, len(data), errBadInstanceID)
	}
	return id, nil
}

// validInstanceID accepts 32 lowercase hex digits, what createInstanceID writes.
func validInstanceID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// createInstanceID writes a new id to path unless a file is already there
// (then fs.ErrExist).
func createInstanceID(dir, path string) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("instance id: %w", err)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("instance id: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+InstanceIDFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("instance id: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(hex.EncodeToString(raw[:]) + "\n"); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("instance id: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		_ = tmp.Close()
		return fmt.Errorf("instance id: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("instance id: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("instance id: %w", err)
	}
	// Link, unlike rename, fails when the name exists: the first creator wins.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("instance id: %w", err)
	}
	return atomicfile.SyncDir(dir)
}
