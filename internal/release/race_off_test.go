//go:build !race

package release

const raceOn = false
