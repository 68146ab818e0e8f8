package release

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// MaxKeysFile bounds a file of release public keys.
const MaxKeysFile = 64 << 10

// ReadKeysFile reads a file of release public keys: a sutra-release.pub,
// or one key per line, skipping blank lines, '#' comments and minisign's
// "untrusted comment:" lines. At most MaxKeysFile bytes; a file without a
// key is an error. The keys are returned as written (ParseKeys checks them).
func ReadKeysFile(path string) ([]string, error) {
	// A FIFO or a device would block the open or the read: check first
	// (and again on the open file, in case the path changed between).
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("release public keys file %s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("release public keys file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("release public keys file %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeysFile+1))
	if err != nil {
		return nil, fmt.Errorf("release public keys file %s: %w", path, err)
	}
	if len(data) > MaxKeysFile {
		return nil, fmt.Errorf("release public keys file %s is larger than %d bytes", path, MaxKeysFile)
	}
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "untrusted comment:") {
			continue
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("release public keys file %s holds no key", path)
	}
	return keys, nil
}
