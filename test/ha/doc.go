// Package ha is Sutra Grid's high-availability end-to-end test (issue 16):
// a real three-member etcd cluster (internal/etcdtest/etcdmember processes),
// three sutra-master processes on it (--store etcd) and three real
// sutra-agent processes whose master_host lists all three masters, each
// running a real storage-server. The test kills -9 the leading master and
// the leading etcd member, restarts every master, and checks from outside
// (gRPC, HTTP, /proc, the nodes' KV API) that the fleet keeps working and
// nothing acknowledged is lost.
//
// Linux only (process groups, /proc); `go test -short` skips it.
package ha
