//go:build race

package release

// raceOn: the race detector makes minisign's scrypt (1 GiB, 2^25 ops) take minutes.
const raceOn = true
