// Package etcdstore is the store.Store of several masters: the fleet's
// tables as key prefixes in etcd (Key), batches as etcd transactions with
// compare-and-swap on mod revisions, Watch as etcd watches.
package etcdstore
