package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sutragrid/sutra/internal/release"
)

// maxKeysFile bounds the --release-public-keys file.
const maxKeysFile = 64 << 10

// parseReleaseKeys reads --release-public-keys: empty (none), a comma-
// separated list of minisign public keys ("RW…"), or a file holding them
// (a sutra-release.pub, or one key per line; '#' comments and minisign's
// "untrusted comment:" lines are skipped). Every key must parse.
func parseReleaseKeys(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	var keys []string
	if strings.HasPrefix(v, "RW") {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				keys = append(keys, k)
			}
		}
	} else {
		f, err := os.Open(v)
		if err != nil {
			return nil, fmt.Errorf("release public keys file: %w", err)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxKeysFile+1))
		if err != nil {
			return nil, fmt.Errorf("release public keys file %s: %w", v, err)
		}
		if len(data) > maxKeysFile {
			return nil, fmt.Errorf("release public keys file %s is larger than %d bytes", v, maxKeysFile)
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "untrusted comment:") {
				continue
			}
			keys = append(keys, line)
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("release public keys file %s holds no key", v)
		}
	}
	if _, err := release.ParseKeys(keys); err != nil {
		return nil, err
	}
	return keys, nil
}
