package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/store/etcdstore"
)

// masterIDPattern is what --master-id accepts: it names etcd keys and log lines.
var masterIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// storeSettings turns --store and the --etcd-* flags into master.StoreOptions.
func storeSettings(val, source map[string]string, grpcPort int) (master.StoreOptions, error) {
	var o master.StoreOptions
	var errs []error
	switch backend := strings.TrimSpace(val["store"]); backend {
	case master.StoreBbolt:
		o.Backend = backend
		for _, f := range []string{"etcd-endpoints", "etcd-cert", "etcd-key", "etcd-ca"} {
			if val[f] != "" {
				errs = append(errs, fmt.Errorf("%s is set but the store is bbolt: add --store etcd (or SUTRA_STORE=etcd)", source[f]))
			}
		}
		return o, errors.Join(errs...)
	case master.StoreEtcd:
		o.Backend = backend
	default:
		return o, fmt.Errorf("%s=%q: want bbolt or etcd", source["store"], val["store"])
	}
	eps, err := etcdstore.ParseEndpoints(val["etcd-endpoints"])
	switch {
	case val["etcd-endpoints"] == "":
		errs = append(errs, fmt.Errorf("--store etcd needs --etcd-endpoints (or SUTRA_ETCD_ENDPOINTS), like https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379"))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: %w", source["etcd-endpoints"], err))
	}
	o.EtcdEndpoints = eps
	o.EtcdPrefix = val["etcd-prefix"]
	if err := etcdstore.ValidatePrefix(o.EtcdPrefix); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", source["etcd-prefix"], err))
	}
	o.EtcdCert, o.EtcdKey, o.EtcdCA = val["etcd-cert"], val["etcd-key"], val["etcd-ca"]
	if (o.EtcdCert == "") != (o.EtcdKey == "") {
		errs = append(errs, fmt.Errorf("--etcd-cert and --etcd-key go together"))
	}
	o.MasterID = val["master-id"]
	if o.MasterID == "HOSTNAME-GRPCPORT" || o.MasterID == "" {
		h, _ := os.Hostname()
		h = strings.Map(func(r rune) rune {
			if r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
				return r
			}
			return '-'
		}, h)
		if len(h) > 50 {
			h = h[:50]
		}
		if h == "" {
			h = "master"
		}
		o.MasterID = fmt.Sprintf("%s-%d", h, grpcPort)
	}
	if !masterIDPattern.MatchString(o.MasterID) {
		errs = append(errs, fmt.Errorf("%s=%q: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63", source["master-id"], o.MasterID))
	}
	lease, err := time.ParseDuration(val["leader-lease"])
	if err != nil || lease < 2*time.Second || lease > time.Minute {
		errs = append(errs, fmt.Errorf("%s=%q: want a duration from 2s to 60s, like 5s", source["leader-lease"], val["leader-lease"]))
	}
	o.LeaderLease = lease
	return o, errors.Join(errs...)
}
