package main

import (
	"strings"

	"github.com/sutragrid/sutra/internal/release"
)

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
		var err error
		if keys, err = release.ReadKeysFile(v); err != nil {
			return nil, err
		}
	}
	if _, err := release.ParseKeys(keys); err != nil {
		return nil, err
	}
	return keys, nil
}
