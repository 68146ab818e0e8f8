package etcdstore

import (
	"fmt"
	"strings"
)

// DefaultPrefix is where a grid keeps its keys in etcd (--etcd-prefix).
const DefaultPrefix = "/sutra/"

// Key is the etcd key of key in table under prefix: prefix + table + "/" +
// key. Everything that names a store key in etcd (the backend, the leader
// election's fence) goes through it.
func Key(prefix, table string, key []byte) string {
	return TablePrefix(prefix, table) + string(key)
}

// TablePrefix is the etcd key prefix of a table: prefix + table + "/".
func TablePrefix(prefix, table string) string {
	return prefix + table + "/"
}

// ValidatePrefix checks an --etcd-prefix: it starts and ends with "/", at
// most 128 bytes, printable ASCII without spaces.
func ValidatePrefix(p string) error {
	if len(p) < 1 || len(p) > 128 || !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") {
		return fmt.Errorf("etcd prefix %q must start and end with \"/\" and be at most 128 bytes", p)
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c >= 0x7f {
			return fmt.Errorf("etcd prefix %q: only printable ASCII without spaces", p)
		}
	}
	return nil
}
