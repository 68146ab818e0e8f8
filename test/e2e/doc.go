// Package e2e holds Sutra Grid's end-to-end tests: the real sutra-master,
// sutra-agent, sutra and storage-server binaries, built in TestMain, run as
// separate processes on loopback with their own directories, and the tests
// drive and observe them only from outside — gRPC and HTTP to the master, HTTP
// to the storage nodes, the sutra CLI, signals, /proc and the files on disk.
//
// The tests need Linux (process groups, /proc). `go test -short` skips them.
package e2e
