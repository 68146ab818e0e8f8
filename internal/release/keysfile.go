package release

import (
	"fmt"
	"strings"

	"github.com/sutragrid/sutra/internal/smallfile"
)

// MaxKeysFile bounds a file of release public keys.
const MaxKeysFile = 64 << 10

// ReadKeysFile reads a file of release public keys: a sutra-release.pub,
// or one key per line, skipping blank lines, '#' comments and minisign's
// "untrusted comment:" lines. At most MaxKeysFile bytes; a file without a
// key is an error. The keys are returned as written (ParseKeys checks them).
func ReadKeysFile(path string) ([]string, error) {
	data, err := smallfile.Read(path, MaxKeysFile)
	if err != nil {
		return nil, fmt.Errorf("release public keys file: %w", err)
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
